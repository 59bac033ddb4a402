"""``wsgi.file_wrapper``: a file sent in blocks, or by path where the server can.

PEP 3333's optional "platform-specific file handling"; with the ASGI
``http.response.pathsend`` extension (granian) the server sends the file itself.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import IO

# The types ``open()`` returns for a binary file: read() gives the file's own bytes.
_PLAIN_FILES = (io.BufferedReader, io.BufferedRandom, io.FileIO)


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
        """Return ``(path, size)`` when the server may open ``name`` instead of reading us.

        That holds only when all of these do, and any doubt means streaming:

        * the object is a plain binary file as ``open(path, "rb")`` makes it, so its
          ``read()`` gives the file's own bytes (a ``gzip.open`` file has the same
          descriptor but decompresses) and its ``close()`` leaves the file in place
          (a ``NamedTemporaryFile`` deletes it on close, which bridge calls before
          the server opens the path);
        * its descriptor is the file at ``name`` (same device and inode as
          ``os.stat(name)``: not replaced or removed since it was opened);
        * it is a regular file, read from its start.

        ``fileno()`` may raise anything a file-like object raises for "no descriptor"
        (``AttributeError`` from a tar member, ``io.UnsupportedOperation``,
        ``OSError``): all of it means streaming.
        """
        filelike = self.filelike
        if type(filelike) not in _PLAIN_FILES:
            return None
        name = getattr(filelike, "name", None)
        if not isinstance(name, str):
            return None
        try:
            opened = os.fstat(filelike.fileno())
            named = os.stat(name)
            if filelike.tell() != 0:
                return None
        except Exception:
            return None
        if not stat.S_ISREG(opened.st_mode):
            return None
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            return None
        return os.path.abspath(name), opened.st_size

    def pathsend_target(self, status: int, content_length: int | None) -> tuple[str, int] | None:
        """``(path, size)`` when the server may send this file by path instead of the
        thread reading it: a response with a body (not 1xx, 204 or 304, which get no
        Content-Length either) whose file passes ``regular_file`` and whose size
        agrees with ``content_length``."""
        if status < 200 or status in (204, 304):
            return None
        found = self.regular_file()
        if found is None:
            return None
        if content_length is not None and content_length != found[1]:
            return None
        return found
