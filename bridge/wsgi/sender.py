"""The response side of one request: the framing machine, the lock that guards it, the sender.

Everything the application's thread and the event loop both touch lives in ``Sender``
and changes only through its methods, as uvicorn keeps a connection's flow control
in one ``FlowControl`` and h11 keeps "everything that affects the state machine" in
one file. The thread feeds the machine (``start_response``, ``push``, ``end``); the
loop drains it (``kick``, the pump, ``finish``) and tells it what the client and the
request body did (``client_gone``, ``body_failed``). The lock is held for a state change
only, never across I/O. The theory of operation is in this folder's ``__init__.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

from .._types import Headers, Message, OptExcInfo, RawHeaders, Send, Write
from ..errors import ClientDisconnected, ResponseError
from .filewrapper import FileWrapper
from .framing import Framing, State
from .headers import encode_headers, parse_status

logger = logging.getLogger("bridge")


class Owner(Protocol):
    """What a ``Sender`` tells the request it belongs to (a ``RequestCycle``)."""

    def on_stream(self) -> None:
        """The response starts to stream: watch for the client leaving."""

    def on_gone(self) -> None:
        """``send`` raised ``OSError``: the client left."""


class Sender:
    """One response's framing machine, its lock, its wake-ups and the task that sends.

    ``send`` is the server's ASGI ``send``; ``owner`` hears when the response starts to
    stream and when ``send`` finds the client gone (one reference rather than two bound
    methods: every request makes a sender).
    ``status`` and ``sent`` record what went out, for the request's outcome.
    """

    __slots__ = (
        "_drained",
        "_lock",
        "_loop",
        "_owner",
        "_send",
        "_sending",
        "_space",
        "_task",
        "_wake_pending",
        "framing",
        "sent",
        "status",
    )

    def __init__(
        self,
        framing: Framing,
        send: Send,
        loop: asyncio.AbstractEventLoop,
        owner: Owner,
    ) -> None:
        self.framing = framing
        self.status = 0  # the status sent; 0 if nothing was
        self.sent = 0  # body bytes handed to the server
        self._send = send
        self._loop = loop
        self._owner = owner
        # Held for a state change of the framing machine and never across I/O.
        self._lock = threading.Lock()
        self._space: threading.Condition | None = None  # the thread waits for the sender
        self._drained: asyncio.Future[None] | None = None  # an async producer waits
        self._wake_pending = False  # a call_soon_threadsafe to the loop is on its way
        self._sending = False  # a sender (task or inline) owns send()
        self._task: asyncio.Task[None] | None = None

    # -- the application's side (a thread, or the loop) --------------------------------

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Write:
        """PEP 3333 ``start_response``; the headers go out when the framing rule says."""
        replace = exc_info is not None and exc_info[0] is not None
        try:
            with self._lock:
                if replace and self.framing.headers_sent:
                    # PEP 3333: "if exc_info is provided, and the HTTP headers have
                    # already been sent, start_response must raise an error, and
                    # should re-raise using the exc_info tuple."
                    assert exc_info is not None and exc_info[1] is not None
                    raise exc_info[1].with_traceback(exc_info[2])
                code = parse_status(status)
                raw, length = encode_headers(headers)
                self.framing.start(code, raw, length, replace)
        finally:
            exc_info = None
        return self.write

    def start(self, status: int, headers: RawHeaders, content_length: int | None) -> None:
        """Start a response whose headers are already checked (a view's)."""
        with self._lock:
            self.framing.start(status, headers, content_length)

    def write(self, data: bytes) -> None:
        """PEP 3333 ``write()``: a body chunk outside the iterable."""
        if self.framing.state is State.IDLE:
            raise ResponseError("write() was called before start_response().")
        self.push(data)

    def push(self, data: object, whole: bool = False) -> bool:
        """One body chunk, from the application's thread; True once no more is wanted.

        ``whole``: the chunk is part of a body already in memory (a list), which is
        held to the end without waking the loop. A streamed chunk wakes the loop only
        when the sender is idle. Blocks while more than ``response_buffer_size`` waits
        for the client.
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        if not data:
            return False
        wake = throttle = False
        framing = self.framing
        with self._lock:
            done = framing.body(data, whole)
            if not self._wake_pending and framing.pending:
                wake = not self._sending
                self._wake_pending = wake
            throttle = framing.backlog > framing.buffer_size and framing.state is State.STREAMING
        if wake:
            self._loop.call_soon_threadsafe(self._on_thread_event)
        if throttle:
            self._wait_for_space()
        return done

    def send_path(self, wrapper: FileWrapper) -> bool:
        """Let the server send the wrapped file by path (``http.response.pathsend``);
        False when it cannot, and the file is iterated instead."""
        framing = self.framing
        found = wrapper.pathsend_target(framing.status, framing.content_length)
        if found is None:
            return False
        with self._lock:
            return framing.send_path(*found)

    def end(self, error: BaseException | None) -> tuple[BaseException | None, State]:
        """The application has finished, or raised ``error``: the error to report (a
        short body is one) and the state the response ended in."""
        framing = self.framing
        with self._lock:
            if error is None:
                error = framing.end()
            else:
                framing.error()
            state = framing.state
            overflowed = framing.overflowed
        if overflowed:
            logger.warning(
                "The application produced more than its Content-Length of %d bytes; "
                "the excess was not sent.",
                framing.content_length,
            )
        return error, state

    def whole(
        self, status: int, headers: RawHeaders, content_length: int | None, chunks: list[bytes]
    ) -> BaseException | None:
        """A response whose body is in memory, in one state change; the error if it is
        broken (a short body)."""
        framing = self.framing
        with self._lock:
            framing.start(status, headers, content_length)
            for chunk in chunks:
                if framing.body(chunk, whole=True):
                    break
            return framing.end()

    def push_on_loop(self, data: object) -> bool:
        """One body chunk from an async producer on the loop; True once no more is wanted."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        framing = self.framing
        with self._lock:
            done = framing.body(data)
            pending = framing.pending
        if pending:
            self.kick()
        if framing.state is State.GONE:
            raise ClientDisconnected("The client disconnected during the response.")
        return done

    async def drained(self) -> None:
        """On the loop: wait while more than ``response_buffer_size`` waits for the client."""
        if self.framing.backlog > self.framing.buffer_size:
            drained = self._drained = self._loop.create_future()
            await drained

    # -- what the request and the client did (loop) -------------------------------------

    def body_failed(self, status: int) -> bool:
        """The request body failed (413, 408): True if that answer replaces the response."""
        with self._lock:
            return self.framing.body_failed(status)

    def client_gone(self) -> None:
        """The client left: nothing more is sent, and every waiter wakes to find it so."""
        with self._lock:
            if not self.framing.finished or self.framing.pending:
                self.framing.client_gone()
            if self._space is not None:
                self._space.notify_all()
        self._wake_drained()

    # -- sending (loop) ------------------------------------------------------------------

    def kick(self) -> None:
        """Make sure a sender is sending what the framing machine has queued."""
        if not self._sending:
            self._sending = True
            self._task = self._loop.create_task(self._pump())
            self._owner.on_stream()  # the response streams: watch for the client leaving

    async def send(self, message: Message) -> int:
        """Send one message and record it; return the body bytes in it."""
        kind = message["type"]
        size = 0
        if kind == "http.response.body":
            size = len(message.get("body", b""))
        elif kind == "http.response.start":
            self.status = message["status"]
        try:
            await self._send(message)
        except OSError:
            # uvicorn, hypercorn, daphne and granian return silently from send() once
            # the client is gone (and say so with http.disconnect); a server that
            # raises instead is treated the same way.
            self._owner.on_gone()
            return size
        self.sent += size
        return size

    async def finish(self) -> None:
        """After the application: send the rest of the response."""
        if self._task is not None:
            self.kick()
            await self._task
        elif not self._sending:
            self._sending = True
            with self._lock:
                messages = self.framing.take()
                finished = self.framing.finished
            for message in messages:  # the whole response, in one go: the common case
                await self.send(message)
            if not finished:
                await self._pump()

    def close(self) -> bool:
        """Stop the sending task; True if the response was cut (headers went out, the
        body will not complete)."""
        # The task, once cancelled, keeps a traceback whose frame holds this sender, and
        # the owner holds this sender: let go of both, so reference
        # counting frees the request when it ends rather than the garbage collector
        # some time later (measured: 7,000 instructions a request). _sending stays
        # True: no task starts after this.
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        self._owner = _NOBODY
        return self.framing.state is State.CUT

    async def _pump(self) -> None:
        """Send what the framing machine queues, and end once nothing is queued.

        An idle stream keeps no sending task waiting: the next chunk starts a new one
        (``kick``), so an open, silent response costs no more than its listener.
        """
        framing = self.framing
        lock = self._lock
        while True:
            with lock:
                messages = framing.take()
                if not messages:
                    # Under the lock: a thread pushing after this sees no sender and
                    # wakes the loop, which starts the next one.
                    self._sending = framing.finished
                    if not self._sending:
                        # Idle: a finished task kept here would cost an open stream
                        # 0.6 KiB for nothing (the next chunk starts a new one).
                        self._task = None
                    return
            sent = 0
            for message in messages:
                sent += await self.send(message)
            with lock:
                framing.sent(sent)
                space = framing.backlog <= framing.buffer_size // 2
                if space and self._space is not None:
                    self._space.notify_all()
            if space:
                self._wake_drained()

    # -- wake-ups ------------------------------------------------------------------------

    def _on_thread_event(self) -> None:
        """On the loop, woken by the thread: start or wake the sender."""
        with self._lock:
            self._wake_pending = False
            pending = self.framing.pending
        if pending:
            self.kick()

    def _wait_for_space(self) -> None:
        """In the thread: wait until the client has taken half of the backlog."""
        framing = self.framing
        with self._lock:
            if self._space is None:
                self._space = threading.Condition(self._lock)
            while framing.backlog > framing.buffer_size // 2 and framing.state is State.STREAMING:
                self._space.wait()
            if framing.state is State.GONE:
                raise ClientDisconnected("The client disconnected during the response.")

    def _wake_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class _Nobody:
    """The owner of a closed sender: it hears nothing more."""

    def on_stream(self) -> None:
        pass

    def on_gone(self) -> None:
        pass


_NOBODY = _Nobody()


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"The application produced {type(data).__name__} as body data ({data!r:.40}); "
        "a response body must be bytes, so encode it first."
    )
