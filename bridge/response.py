"""The WSGI response side: ``start_response``, ``write()``, iteration, and the ASGI sends.

A ``Responder`` is shared by the application's thread (which calls ``start_response``,
``write`` and ``send_body``) and the event loop (which sends ASGI messages). See
``bridge.threads`` for the theory of operation of the handoff between the two.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from ._types import Headers, Message, OptExcInfo, RawHeaders, Send, Write
from .errors import ClientDisconnected

logger = logging.getLogger("bridge")

# A response body up to this size is handed to the event loop whole and the thread
# is free at once, however slowly the client reads; past it the thread waits for
# the client (backpressure). nginx's proxy_buffers hold 8 x 4-8 KiB per response
# and gunicorn's sync workers hold nothing, pinning the worker for the whole send;
# 1 MiB covers nearly every HTML page and JSON document at a cost of at most
# 1 MiB per in-flight response.
DEFAULT_RESPONSE_BUFFER = 1024 * 1024

# RFC 9110 7.6.1 hop-by-hop fields. PEP 3333: "Applications and middleware are
# forbidden from using HTTP/1.1 'hop-by-hop' features or headers"; the ASGI server
# frames the response itself, so these are dropped rather than passed on.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

# RFC 9110 5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_STATUS = re.compile(r"([1-9][0-9][0-9])(?: (.*))?\Z", re.DOTALL)


def carries_body(head: bool, status: int) -> bool:
    """Whether a response has body bytes: none for HEAD, 1xx, 204 and 304 (RFC 9110 6.4.1)."""
    return not (head or status in (204, 304) or status < 200)


class ResponseError(Exception):
    """The application broke the WSGI response contract."""


def parse_status(status: object) -> int:
    """Return the status code of a WSGI status line such as ``"200 OK"``.

    A missing reason phrase (``"200"``) is accepted, as gunicorn accepts it; anything
    else that is not a three-digit code is refused.
    """
    if not isinstance(status, str):
        raise ResponseError(f"The status must be a str such as '200 OK', not {status!r}.")
    match = _STATUS.match(status)
    if match is None or "\r" in status or "\n" in status:
        raise ResponseError(f"The status {status!r} is not a three-digit code and a reason.")
    return int(match.group(1))


def encode_headers(headers: object) -> tuple[RawHeaders, int | None]:
    """Validate WSGI response headers; return them as ASGI bytes and the Content-Length."""
    if not isinstance(headers, list):
        raise ResponseError(f"The response headers must be a list of tuples, not {headers!r}.")
    raw: RawHeaders = []
    content_length: int | None = None
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ResponseError(f"A response header must be a (name, value) tuple, not {item!r}.")
        name, value = item
        if not (isinstance(name, str) and isinstance(value, str)):
            raise ResponseError(f"The response header {item!r} must have a str name and value.")
        if not _TOKEN.match(name):
            raise ResponseError(f"The response header name {name!r} is not a valid HTTP token.")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ResponseError(
                f"The value of the response header {name!r} contains CR, LF or NUL, "
                "which would split the response; remove them."
            )
        try:
            raw_value = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ResponseError(
                f"The value of the response header {name!r} is not latin-1; "
                "encode it (for example RFC 8187 or percent-encoding) first."
            ) from None
        raw_name = name.lower().encode("latin-1")
        if raw_name in HOP_BY_HOP:
            continue
        if raw_name == b"content-length":
            if not value.strip().isdigit():
                raise ResponseError(f"The Content-Length {value!r} is not a whole number.")
            length = int(value)
            if content_length is not None and content_length != length:
                raise ResponseError("The response has two different Content-Length headers.")
            if content_length is not None:
                continue
            content_length = length
        raw.append((raw_name, raw_value))
    return raw, content_length


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


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# A response is first COLLECTING: chunks wait in the queue, the loop has sent nothing,
# and an error can still become a clean 500. If the thread is still producing when
# the loop gets to run (a slow generator releases the GIL), the loop commits the
# headers and the response is STREAMING. If the thread finishes first, it is DONE
# and the loop sends it whole, with its Content-Length.
COLLECTING, STREAMING, DONE = 0, 1, 2


class Responder:
    """One WSGI response, from ``start_response`` in a thread to ``send`` on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Send,
        method: str,
        buffer_size: int = DEFAULT_RESPONSE_BUFFER,
    ) -> None:
        self.loop = loop
        self.send = send
        self.head = method == "HEAD"
        self.buffer_size = buffer_size
        self.status_code = 0  # 0 until start_response is called
        self.raw_headers: RawHeaders = []
        self.content_length: int | None = None
        self.body_allowed = True
        self.complete = False  # the declared Content-Length has been produced
        self.written = 0  # body bytes produced so far
        self.pathsend: str | None = None  # a file for the server to send by path
        self.on_stream: Callable[[], None] | None = None  # starts the disconnect listener
        # Shared between the thread and the loop, under _lock. The condition the
        # thread waits on for backpressure is made only when a response needs it.
        self._lock = threading.Lock()
        self._space: threading.Condition | None = None
        self._state = COLLECTING
        self._queue: list[bytes] = []
        self._queued = 0
        self._commit_pending = False
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # the thread has produced everything
        self.gone = False  # the client went away
        self.sender: asyncio.Task[None] | None = None

    @property
    def streaming(self) -> bool:
        """True once the headers are committed and the body goes out piece by piece."""
        return self._state == STREAMING

    # -- the application's thread ---------------------------------------------------

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Write:
        """PEP 3333 ``start_response``; headers are only sent with the first body bytes."""
        if exc_info is not None and exc_info[0] is not None:
            try:
                with self._lock:
                    if self._state == STREAMING:
                        # PEP 3333: "if exc_info is provided, and the HTTP headers have
                        # already been sent, start_response must raise an error, and
                        # should re-raise using the exc_info tuple."
                        raise exc_info[1].with_traceback(exc_info[2])
                    self._queue = []
                    self._queued = 0
            finally:
                exc_info = None
        elif self.status_code:
            raise ResponseError(
                "start_response() was called a second time without exc_info; "
                "pass exc_info=sys.exc_info() to replace the headers after an error."
            )
        code = parse_status(status)
        self.raw_headers, self.content_length = encode_headers(headers)
        self.status_code = code
        self.body_allowed = carries_body(self.head, code)
        self.written = 0
        self.complete = False
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333 ``write()``: the data goes out without waiting for more."""
        if not self.status_code:
            raise ResponseError("write() was called before start_response().")
        self.send_body(data, hold=False)

    def send_body(self, data: object, hold: bool) -> None:
        """Take one body chunk; ``hold`` means more data follows at once (a list body)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise ResponseError(
                    f"The application produced {type(data).__name__} as body data; "
                    "a WSGI body must be bytes, so encode it first."
                )
            data = bytes(data)
        if not data:
            return
        if not self.status_code:
            raise ResponseError("The application produced body data before start_response().")
        if self.content_length is not None:
            remaining = self.content_length - self.written
            if len(data) >= remaining:
                if len(data) > remaining:
                    logger.warning(
                        "The application produced more than its Content-Length of %d bytes; "
                        "the excess was not sent.",
                        self.content_length,
                    )
                    data = data[:remaining]
                # This chunk completes the body: nothing is gained by waking the loop.
                self.complete = True
                hold = True
        self.written += len(data)
        if self.body_allowed and data:
            self._push(data, wake=not hold)

    def _push(self, data: bytes, wake: bool) -> None:
        """Queue ``data`` for the loop; wake it if it must not wait for the rest."""
        commit = False
        waiter = None
        with self._lock:
            if self.gone:
                raise ClientDisconnected("The client disconnected during the response.")
            self._queue.append(data)
            self._queued += len(data)
            if self._state == STREAMING:
                waiter, self._waiter = self._waiter, None
            elif wake and not self._commit_pending:
                self._commit_pending = commit = True
            # A held body (a list) is already in memory: waiting would gain nothing.
            throttle = self._queued > self.buffer_size and (
                self._state == STREAMING or self._commit_pending
            )
        if commit:
            self.loop.call_soon_threadsafe(self._commit_soon)
        elif waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)
        if throttle:
            with self._lock:
                if self._space is None:
                    self._space = threading.Condition(self._lock)
                while self._queued > self.buffer_size // 2 and not self.gone:
                    self._space.wait()
                if self.gone:
                    raise ClientDisconnected("The client disconnected during the response.")

    def finish_in_thread(self) -> None:
        """The thread is done: a response still being collected will be sent whole."""
        with self._lock:
            if self._state == COLLECTING:
                self._state = DONE

    # -- the event loop -----------------------------------------------------------

    def _commit_soon(self) -> None:
        # Waking the loop released the GIL inside a syscall, so this often runs while
        # the thread is between two chunks of a body it is about to finish. Going
        # round the loop once more hands the GIL back: a thread that completes
        # without blocking is then DONE, and its response goes out whole.
        self.loop.call_soon(self._commit)

    def _commit(self) -> None:
        """Start streaming if the thread is still producing; else it will be sent whole."""
        with self._lock:
            if self._state != COLLECTING or self.gone:
                return
            self._state = STREAMING
        self.sender = self.loop.create_task(self._stream())
        if self.on_stream is not None:
            self.on_stream()

    def client_gone(self) -> None:
        """The client disconnected: wake the thread and the sender so both stop."""
        with self._lock:
            self.gone = True
            if self._space is not None:
                self._space.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    async def _stream(self) -> None:
        """Send the headers, then every queued chunk, until the thread ends or the client goes."""
        try:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            while True:
                with self._lock:
                    chunks, self._queue = self._queue, []
                    if not chunks:
                        if self._ended or self.gone:
                            return
                        waiter = self._waiter = self.loop.create_future()
                if not chunks:
                    await waiter
                    continue
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
                with self._lock:
                    self._queued -= len(data)
                    if self._space is not None and self._queued <= self.buffer_size // 2:
                        self._space.notify_all()
        except OSError:
            # uvicorn, hypercorn, daphne and granian return silently from send()
            # once the client is gone (and say so with http.disconnect); a server
            # that raises instead is treated the same way.
            self.client_gone()

    async def finish_streaming(self, abort: bool = False) -> bool:
        """After the thread: flush what is queued and, unless aborting, end the body.

        Returns True if the body went out whole.
        """
        with self._lock:
            self._ended = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)
        assert self.sender is not None
        await self.sender
        if self.gone or abort:
            return False
        if self.content_length is not None and self.written < self.content_length:
            return False
        try:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return False
        return True

    async def send_whole(self) -> None:
        """Send a response whose body was produced before any of it was sent: one handoff."""
        headers = self.raw_headers
        if self.pathsend is not None:
            await self.send(
                {"type": "http.response.start", "status": self.status_code, "headers": headers}
            )
            await self.send({"type": "http.response.pathsend", "path": self.pathsend})
            return
        if self.content_length is None and self.body_allowed:
            # The whole body is known, so its length is too: a client (or proxy) can
            # then tell a complete response from a cut one without chunked framing.
            # (Not for HEAD: gunicorn adds none there, and the app may not have
            # produced the body a GET would get.)
            headers = [*headers, (b"content-length", str(self.written).encode("ascii"))]
        await self.send(
            {"type": "http.response.start", "status": self.status_code, "headers": headers}
        )
        held = self._queue
        if len(held) > 1 and self.written <= self.buffer_size:
            held = [b"".join(held)]
        if len(held) <= 1:
            await self.send({"type": "http.response.body", "body": held[0] if held else b""})
            return
        for chunk in held:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self.send({"type": "http.response.body", "body": b""})


def plain_response_messages(
    status: int, text: str, extra_headers: RawHeaders | None = None
) -> tuple[Message, Message]:
    """The two ASGI messages of a short text/plain response that bridge answers itself."""
    body = text.encode("utf-8")
    headers: RawHeaders = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def iterate(responder: Responder, iterable: Iterable[bytes], extensions: dict[str, Any]) -> None:
    """Drive the application's iterable in the thread, stopping at Content-Length or disconnect."""
    if type(iterable) is FileWrapper and "http.response.pathsend" in extensions:
        found = iterable.regular_file()
        if found is not None and responder.status_code and not responder.written:
            path, size = found
            length = responder.content_length
            if length is None or length == size:
                if length is None:
                    responder.raw_headers.append((b"content-length", str(size).encode("ascii")))
                    responder.content_length = size
                responder.written = size
                responder.pathsend = path
                return
    # A list or tuple is already whole in memory: holding it costs nothing and
    # turns the response into a single handoff however many items it has.
    hold = type(iterable) in (list, tuple)
    send_body = responder.send_body
    for chunk in iterable:
        send_body(chunk, hold)
        if responder.complete:
            return
