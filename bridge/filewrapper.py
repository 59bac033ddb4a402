"""``wsgi.file_wrapper``: a file sent in blocks, or by path where the server can.

PEP 3333's optional "platform-specific file handling"; with the ASGI
``http.response.pathsend`` extension (granian) the server sends the file itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import IO


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks, or let the server send it by path.

    PEP 3333: "the file-like object must have a read() method that takes an optional
    size argument"; ``close()`` closes the file, and is called by bridge like any
    iterable's ``close()``.
    """

    # Reads smaller than this cost more in handoffs than they save in memory.
    MIN_BLOCK = 64 * 1024

    def __init__(self, filelike: IO[bytes], block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = max(block_size, self.MIN_BLOCK)

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def regular_file(self) -> tuple[str, int] | None:
        """Return ``(path, size)`` when the wrapped object is a regular file at its start."""
        name = getattr(self.filelike, "name", None)
        fileno = getattr(self.filelike, "fileno", None)
        tell = getattr(self.filelike, "tell", None)
        if not isinstance(name, str) or fileno is None or tell is None:
            return None
        try:
            info = os.fstat(fileno())
            if not stat.S_ISREG(info.st_mode) or tell() != 0:
                return None
            return os.path.abspath(name), info.st_size
        except (OSError, ValueError):
            return None

    def pathsend_target(self, content_length: int | None) -> tuple[str, int] | None:
        """``(path, size)`` when the server may send this file by path instead of the
        thread reading it: a regular file whose size agrees with ``content_length``."""
        found = self.regular_file()
        if found is None:
            return None
        if content_length is not None and content_length != found[1]:
            return None
        return found
