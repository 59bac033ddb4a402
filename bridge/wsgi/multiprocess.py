"""Whether more than one worker process serves the app: PEP 3333's ``wsgi.multiprocess``.

PEP 3333: ``wsgi.multiprocess`` is true "if an equivalent application object may be
simultaneously invoked by another process". ``bridge serve`` and bridge's gunicorn
worker know the worker count and say so in ``BRIDGE_MULTIPROCESS`` ("1" or "0")
before any worker starts. Under a server run directly (``uvicorn --workers 4``,
``hypercorn -w 4``, ``granian --workers 4``, ``gunicorn -w 4 -k ...``) the worker reads
the count from its parent's command line or ``WEB_CONCURRENCY``, the variable those
servers read. A worker count set only in a config file is not seen there; set
``BRIDGE_MULTIPROCESS=1`` then. The parent's command line is read once per process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

VARIABLE = "BRIDGE_MULTIPROCESS"
# The servers whose worker processes are counted from their command line.
SUPERVISORS = ("uvicorn", "hypercorn", "granian", "gunicorn")


# Read on every request, so read cheaply: os.environ.get() of a variable that is not
# set raises and catches a KeyError inside the Mapping machinery (about 1.5 us, a tenth
# of the event loop's share of a hello-world request). os.environ keeps its values in
# the plain dict ``_data`` under ``encodekey(name)``, and every change through
# os.environ (monkeypatch.setenv included) lands there; a platform without it is read
# the slow way.
_RAW: dict[Any, Any] | None = getattr(os.environ, "_data", None)
_encode = getattr(os.environ, "encodekey", None)
_KEY = _encode(VARIABLE) if _RAW is not None and _encode is not None else None
_VALUES = {getattr(os.environ, "encodevalue", str)(v): v == "1" for v in ("0", "1")}


def multiprocess() -> bool:
    """True when more than one worker process serves this app."""
    if _KEY is not None:
        told = _VALUES.get(_RAW.get(_KEY)) if _RAW is not None else None
    else:  # pragma: no cover (an os.environ without its dict)
        told = {"0": False, "1": True}.get(os.environ.get(VARIABLE, ""))
    return _from_the_parent() if told is None else told


@functools.cache
def _from_the_parent() -> bool:
    argv = parent_argv()
    if not any(_names_a_server(word) for word in argv[:3]):
        return False
    count = workers_in(argv)
    if count is None:
        count = _int(os.environ.get("WEB_CONCURRENCY")) or 1
    return count > 1


def _names_a_server(word: str) -> bool:
    name = Path(word).name
    return any(server in name for server in SUPERVISORS)


def parent_argv() -> list[str]:
    """The parent process's command line (Linux), or an empty list where it is unknown."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def workers_in(argv: list[str]) -> int | None:
    """The value of ``-w N``, ``-wN``, ``--workers N`` or ``--workers=N`` in ``argv``."""
    for index, word in enumerate(argv):
        if word in ("-w", "--workers") and index + 1 < len(argv):
            return _int(argv[index + 1])
        if word.startswith("--workers="):
            return _int(word.partition("=")[2])
        if word.startswith("-w") and word[2:].isdigit():
            return int(word[2:])
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
