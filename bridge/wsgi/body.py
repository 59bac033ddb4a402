"""The request body: ``wsgi.input`` for legacy apps, ``request.stream`` for views.

One type for every route. The request cycle, on the event loop, is its only writer
(``feed``, ``finish``, ``fail``); a reader (the application's thread, or an async
view on the loop once the body is complete) reads it like a file. Up to
``buffer_size`` bytes are kept in memory; past that the whole body moves to an
anonymous temporary file and every later byte is appended there, as asgiref's
``WsgiToAsgi`` and werkzeug's form parser spool large bodies. So the writer never
waits for the reader: the cycle keeps receiving, and sees a disconnect, however
slowly the application reads (or whether it reads at all), and memory stays at
``buffer_size`` per request whatever the body's size.

Bytes below ``size`` never change once written, so a reader copies them without the
lock; the lock (and the condition a blocked reader waits on) exists only for a
body that was still arriving when its reader started. A disconnect, a body past
``max_body_size`` or a stalled body is stored as an error: once the bytes received
before it are consumed, every read raises it. A read never returns a short body as
if it were complete.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

from ..errors import BodyError

# How much of a body is held in memory before it spools to disk, and how much is
# received before a legacy request takes a thread. uvicorn reads the socket 64 KiB
# at a time; 1 MiB is sixteen such reads, and small next to the "few MiB" a proxy
# such as nginx buffers per request in memory (client_body_buffer_size, past which
# nginx also writes the body to a temporary file).
DEFAULT_REQUEST_BUFFER = 1024 * 1024

# A readline() scans the body this many bytes at a time.
_SCAN = 64 * 1024


class RequestBody:
    """The request body as a PEP 3333 input stream (``read``, ``readline``, iteration)."""

    def __init__(
        self,
        data: bytes = b"",
        *,
        complete: bool = True,
        buffer_size: int = DEFAULT_REQUEST_BUFFER,
    ) -> None:
        self._memory: bytearray | None = bytearray(data)
        self._file: IO[bytes] | None = None
        self._fd = -1
        self.size = len(data)  # bytes received so far
        self._pos = 0  # the reader's position
        self.buffer_size = buffer_size
        self.complete = complete
        self.error: BodyError | None = None
        self._cond: threading.Condition | None = None if complete else threading.Condition()

    @property
    def spooled(self) -> bool:
        """Whether the body has moved to a temporary file."""
        return self._file is not None

    @property
    def in_memory(self) -> int:
        """Bytes of the body held in memory (at most ``buffer_size``)."""
        return len(self._memory) if self._memory is not None else 0

    # -- the writer: the request cycle, on the event loop -------------------------------

    def feed(self, chunk: bytes) -> None:
        """Append ``chunk``; past ``buffer_size`` the body spools to a temporary file."""
        if not chunk:
            return
        memory = self._memory
        if memory is not None and len(memory) + len(chunk) <= self.buffer_size:
            memory += chunk
        else:
            if memory is not None:
                self._spool(memory)
            os.pwrite(self._fd, chunk, self.size)
        cond = self._cond
        if cond is None:
            self.size += len(chunk)
            return
        with cond:
            self.size += len(chunk)
            cond.notify_all()

    def _spool(self, memory: bytearray) -> None:
        # An unnamed file (O_TMPFILE where available): nothing is left on disk, even
        # if the process dies.
        file = tempfile.TemporaryFile(prefix="bridge-body-")  # noqa: SIM115 (closed by close())
        os.pwrite(file.fileno(), memory, 0)
        self._fd = file.fileno()
        self._file = file
        # Once spooled, never back: a reader copying from the file needs no lock.
        self._memory = None

    def finish(self) -> None:
        """The body is complete."""
        self._settle(None)

    def fail(self, error: BodyError) -> None:
        """Make every read past the bytes received so far raise ``error``."""
        self._settle(error)

    def _settle(self, error: BodyError | None) -> None:
        cond = self._cond
        if cond is None:
            if not self.complete and self.error is None:
                self.error = error
                self.complete = error is None
            return
        with cond:
            if not self.complete and self.error is None:
                self.error = error
                self.complete = error is None
                cond.notify_all()

    def close(self) -> None:
        """Free the temporary file; only once no reader can be using the body."""
        file, self._file = self._file, None
        if file is not None:
            self._memory = bytearray()  # reads after close see an empty remainder
            self.size = self._pos
            file.close()

    def __del__(self) -> None:
        # A request the server cancelled leaves its body to the garbage collector,
        # since its thread may still be reading: close the file quietly then.
        file = self._file
        if file is not None:
            file.close()

    # -- the reader ---------------------------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes, fewer only at the end of the body; all of it for -1 or None.

        Like a buffered file, and like gunicorn's and wsgiref's input: Django reads
        ``request.body`` with one ``read(CONTENT_LENGTH)`` and trusts the length.
        """
        if size is None or size < 0:
            available = self._wait(None)
        elif size == 0:
            return b""
        else:
            available = min(self._wait(size), size)
        return self._take(available)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line, ending in ``\\n``, or at most ``size`` bytes of it."""
        limit = -1 if size is None or size < 0 else size
        parts: list[bytes] = []
        got = 0
        while limit < 0 or got < limit:
            want = _SCAN if limit < 0 else min(_SCAN, limit - got)
            available = min(self._wait(1), want)
            if not available:
                break
            block = self._copy(self._pos, available)
            end = block.find(b"\n")
            if end != -1:
                block = block[: end + 1]
            self._pos += len(block)
            parts.append(block)
            got += len(block)
            if end != -1:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines until the end, or until their total length reaches ``hint``."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def _wait(self, wanted: int | None) -> int:
        """Block until ``wanted`` bytes (all, for None) are available or the body is
        complete; return the bytes available. Raises the body's error past them."""
        cond = self._cond
        if cond is None:
            return self.size - self._pos
        with cond:
            while True:
                available = self.size - self._pos
                if self.complete or (wanted is not None and available >= wanted):
                    return available
                if self.error is not None:
                    raise self.error
                cond.wait()

    def _take(self, length: int) -> bytes:
        data = self._copy(self._pos, length)
        self._pos += length
        return data

    def _copy(self, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        memory = self._memory
        if memory is not None:
            return bytes(memory[start : start + length])
        parts = []
        while length:
            block = os.pread(self._fd, length, start)
            if not block:
                raise OSError(f"The spooled request body ended early at byte {start}.")
            parts.append(block)
            start += len(block)
            length -= len(block)
        return parts[0] if len(parts) == 1 else b"".join(parts)
