"""Fetch a peer's released source distribution from PyPI into ``.venv/peers``, once.

The peers' test files are never copied into this repository: each run uses the
sdist that ``pip download`` gets for the pinned version, extracted beside the
virtual environment, so what runs is exactly what the peer released.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv" / "peers"
DOWNLOAD_TIMEOUT = 300.0  # seconds; pip builds each sdist's metadata on a cold cache


class PeerUnavailable(RuntimeError):
    """A peer's sdist could not be downloaded or does not hold the expected file."""


def fetch(name: str, version: str) -> Path:
    """The directory the sdist of ``name==version`` is extracted to (downloaded if needed)."""
    target = CACHE / f"{name}-{version}"
    if (target / ".complete").exists():
        return target
    downloads = CACHE / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _find(downloads, name, version)
    if archive is None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{name}=={version}",
            "-d",
            str(downloads),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(
                f"pip download of {name}=={version} took more than {DOWNLOAD_TIMEOUT:.0f} s; "
                "check the network (PyPI) and run the tests again."
            ) from None
        archive = _find(downloads, name, version)
        if done.returncode != 0 or archive is None:
            raise PeerUnavailable(
                f"pip could not download the source distribution of {name}=={version} "
                f"(the peer suites need PyPI); its output:\n{done.stdout}{done.stderr}"
            )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(partial, filter="data")
        except TypeError:  # CPython 3.10 before 3.10.12 has no extraction filters
            tar.extractall(partial)  # a PyPI sdist of a pinned release
    (top,) = partial.iterdir()  # an sdist holds one directory, NAME-VERSION/
    shutil.rmtree(target, ignore_errors=True)
    top.rename(target)
    partial.rmdir()
    (target / ".complete").touch()
    return target


def _find(directory: Path, name: str, version: str) -> Path | None:
    for candidate in directory.glob("*.tar.gz"):
        stem = candidate.name[: -len(".tar.gz")].lower().replace("_", "-")
        if stem == f"{name.lower()}-{version}":
            return candidate
    return None
