"""Configuration, read from the environment once when the application is built."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A key published in the source is only safe on a developer's machine; create_app warns.
DEV_SECRET_KEY = "dev-only-secret-do-not-deploy"
DEFAULT_DATA_DIR = "var"


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which key signs session cookies."""

    data_dir: Path
    secret_key: str

    @property
    def database_path(self) -> Path:
        """The SQLite database file."""
        return self.data_dir / "sample.sqlite3"

    @property
    def attachments_dir(self) -> Path:
        """The directory uploaded files are stored under."""
        return self.data_dir / "attachments"

    @classmethod
    def from_env(
        cls, data_dir: str | os.PathLike[str] | None = None, secret_key: str | None = None
    ) -> Settings:
        """Build settings from arguments, then `SAMPLE_DATA_DIR`/`SAMPLE_SECRET_KEY`, then defaults.

        A relative data directory is resolved against the current directory now, so a
        later `chdir` cannot move the database.
        """
        raw_dir = data_dir if data_dir is not None else os.environ.get("SAMPLE_DATA_DIR")
        key = secret_key or os.environ.get("SAMPLE_SECRET_KEY") or DEV_SECRET_KEY
        return cls(data_dir=Path(raw_dir or DEFAULT_DATA_DIR).resolve(), secret_key=key)
