"""Configuration, read from the environment once when the application is built.

The key that signs session cookies comes from, in order: the `secret_key` argument,
`SAMPLE_SECRET_KEY`, or the file `secret_key` in the data directory, which
`python -m sample_wsgi_app init-db` (and so `scripts/serve`) creates once with a random
key, readable by its owner only. With none of them the application refuses to serve:
every request gets a 503 that says how to set one. `SAMPLE_DEV_KEY=1` instead signs
with the key published in this file, for a throwaway run on a developer's machine; a
cookie signed with it can be forged by anyone who has read this source.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# Published in the source: safe only where nobody else can reach the server.
DEV_SECRET_KEY = "dev-only-secret-do-not-deploy"
DEFAULT_DATA_DIR = "var"
KEY_FILE = "secret_key"
DEV_KEY_ENV = "SAMPLE_DEV_KEY"


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which key signs session cookies (None: no key given)."""

    data_dir: Path
    secret_key: str | None

    @property
    def database_path(self) -> Path:
        """The SQLite database file."""
        return self.data_dir / "sample.sqlite3"

    @property
    def attachments_dir(self) -> Path:
        """The directory uploaded files are stored under."""
        return self.data_dir / "attachments"

    @property
    def key_path(self) -> Path:
        """The file `init-db` keeps the generated session key in."""
        return self.data_dir / KEY_FILE

    @property
    def uses_dev_key(self) -> bool:
        """True when sessions are signed with the published development key."""
        return self.secret_key == DEV_SECRET_KEY

    @classmethod
    def from_env(
        cls, data_dir: str | os.PathLike[str] | None = None, secret_key: str | None = None
    ) -> Settings:
        """Build settings from arguments, then `SAMPLE_DATA_DIR`/`SAMPLE_SECRET_KEY`, then the
        key file, then `SAMPLE_DEV_KEY=1` (see the module doc).

        A relative data directory is resolved against the current directory now, so a
        later `chdir` cannot move the database.
        """
        raw_dir = data_dir if data_dir is not None else os.environ.get("SAMPLE_DATA_DIR")
        directory = Path(raw_dir or DEFAULT_DATA_DIR).resolve()
        key = secret_key or os.environ.get("SAMPLE_SECRET_KEY") or _read_key(directory)
        if key is None and os.environ.get(DEV_KEY_ENV) == "1":
            key = DEV_SECRET_KEY
        return cls(data_dir=directory, secret_key=key)


def _read_key(directory: Path) -> str | None:
    try:
        key = (directory / KEY_FILE).read_text(encoding="ascii").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return key or None


def ensure_key_file(directory: Path) -> Path:
    """Create the data directory's session key file with a random key, unless it exists."""
    path = directory / KEY_FILE
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once never overwrite each other's key;
        # 0o600: the key is the owner's alone.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    return path
