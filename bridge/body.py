"""``wsgi.input``: a blocking, file-like request body fed from ASGI ``receive``.

Two shapes share one class. A body that was received whole on the event loop
before the application was called (every body up to ``request_buffer_size``) is
plain bytes, read without locks. A larger body streams: a task on the event loop
(``pump``) receives ``http.request`` messages and appends them, the application's
thread reads them, and neither holds more than ``high_water`` bytes ahead of the
reader. Ownership of the buffer is shared under ``_cond``; the thread is the only
one that blocks, the loop never waits on the lock for longer than a copy.

A disconnect, or a body past ``max_body_size``, is stored as an error: once the
bytes received before it are consumed, every read raises it. A read never returns
a short body as if it were complete.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

from ._types import Receive
from .errors import BodyError, BodyTooLarge, ClientDisconnected

# How much of a streaming body may be received ahead of the application's reads.
# uvicorn reads the socket 64 KiB at a time; 1 MiB is sixteen such reads, enough
# to keep the connection busy while the thread parses, and small next to the
# "few MiB" a proxy such as nginx buffers per request in memory.
DEFAULT_HIGH_WATER = 1024 * 1024


class RequestBody:
    """The request body as a PEP 3333 input stream (``read``, ``readline``, iteration)."""

    def __init__(self, data: bytes = b"", *, complete: bool = True) -> None:
        self._buffer = bytearray(data)
        self._pos = 0
        self._complete = complete
        self._error: BodyError | None = None
        self._cond: threading.Condition | None = None if complete else threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained: asyncio.Event | None = None
        self._high_water = DEFAULT_HIGH_WATER
        self._paused = False
        self.received = len(data)
        self.streaming = not complete  # the rest arrives through pump()

    # -- reader side: the application's thread ---------------------------------

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes, fewer only at the end of the body; all of it for -1 or None.

        Like a buffered file, and like gunicorn's and wsgiref's input: Django reads
        ``request.body`` with one ``read(CONTENT_LENGTH)`` and trusts the length.
        """
        if size is None or size < 0:
            self._wait(lambda available: False)
            return self._take(len(self._buffer) - self._pos)
        if size == 0:
            return b""
        self._wait(lambda available: available >= size)
        return self._take(min(size, len(self._buffer) - self._pos))

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line, ending in ``\\n``, or at most ``size`` bytes of it."""
        limit = -1 if size is None or size < 0 else size
        if limit == 0:
            return b""

        def line_ready(available: int) -> bool:
            if limit != -1 and available >= limit:
                return True
            return self._buffer.find(b"\n", self._pos) != -1

        self._wait(line_ready)
        end = self._buffer.find(b"\n", self._pos)
        length = len(self._buffer) - self._pos if end == -1 else end + 1 - self._pos
        if limit != -1:
            length = min(length, limit)
        return self._take(length)

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

    def _wait(self, ready: Callable[[int], bool]) -> None:
        """Block until ``ready(available)`` holds, the body is complete, or it failed."""
        cond = self._cond
        if cond is None:
            return
        with cond:
            while True:
                if self._complete or ready(len(self._buffer) - self._pos):
                    return
                if self._error is not None:
                    raise self._error
                # The reader needs more than is buffered, so the pump must go on even
                # above the high-water mark (read() with no size wants everything).
                self._resume_pump()
                cond.wait()

    def _take(self, length: int) -> bytes:
        """Remove ``length`` bytes from the front of the buffer and return them."""
        cond = self._cond
        if cond is None:
            data = bytes(self._buffer[self._pos : self._pos + length])
            self._pos += length
            return data
        with cond:
            data = bytes(self._buffer[self._pos : self._pos + length])
            self._pos += length
            # Drop consumed bytes once they are the larger part of the buffer, so the
            # buffer never grows past the high-water mark plus one message.
            if self._pos > len(self._buffer) // 2:
                del self._buffer[: self._pos]
                self._pos = 0
            if len(self._buffer) - self._pos < self._high_water:
                self._resume_pump()
        return data

    def _resume_pump(self) -> None:
        """Wake a paused pump; called with ``_cond`` held."""
        if self._paused:
            self._paused = False
            assert self._loop is not None and self._drained is not None
            self._loop.call_soon_threadsafe(self._drained.set)

    # -- writer side: the event loop ------------------------------------------------

    def fail(self, error: BodyError) -> None:
        """Make every read past the bytes received so far raise ``error``."""
        if self._cond is None:
            return
        with self._cond:
            if not self._complete and self._error is None:
                self._error = error
                self._cond.notify_all()

    async def pump(self, receive: Receive, max_body_size: int | None) -> None:
        """Receive the rest of the body into the buffer, pausing above ``high_water``."""
        cond = self._cond
        assert cond is not None, "pump() is only for a streaming body"
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # "http.disconnect"
                self.fail(ClientDisconnected("The client disconnected before the body was sent."))
                return
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if max_body_size is not None and self.received > max_body_size:
                self.fail(BodyTooLarge(max_body_size))
                return
            more = message.get("more_body", False)
            with cond:
                self._buffer += chunk
                if not more:
                    self._complete = True
                elif len(self._buffer) - self._pos >= self._high_water:
                    # Paused under the lock, so a reader that drains the buffer
                    # after this point always sees the flag and wakes the pump.
                    self._paused = True
                    self._drained.clear()
                cond.notify_all()
            if not more:
                return
            if self._paused:
                await self._drained.wait()
