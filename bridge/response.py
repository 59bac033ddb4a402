"""The WSGI response side: ``start_response``, ``write()``, iteration, and the ASGI sends.

A ``Responder`` is shared by the application's thread (which calls ``start_response``,
``write`` and ``send_body``) and the event loop (which sends ASGI messages). See
``bridge.threads`` for the theory of operation of the handoff between the two.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ._types import Headers, Message, OptExcInfo, RawHeaders, Send, Write
from .errors import ClientDisconnected, ResponseError
from .filewrapper import FileWrapper
from .headers import carries_body, encode_headers, parse_status

logger = logging.getLogger("bridge")

# A response body up to this size is handed to the event loop whole and the thread
# is free at once, however slowly the client reads; past it the thread waits for
# the client (backpressure). nginx's proxy_buffers hold 8 x 4-8 KiB per response
# and gunicorn's sync workers hold nothing, pinning the worker for the whole send;
# 1 MiB covers nearly every HTML page and JSON document at a cost of at most
# 1 MiB per in-flight response.
DEFAULT_RESPONSE_BUFFER = 1024 * 1024


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
    if (
        type(iterable) is FileWrapper
        and "http.response.pathsend" in extensions
        and responder.status_code
        and not responder.written
    ):
        found = iterable.pathsend_target(responder.status_code, responder.content_length)
        if found is not None:
            path, size = found
            if responder.content_length is None:
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
