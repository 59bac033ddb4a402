"""One HTTP request from arrival to outcome: admission, the body, the response, disconnects.

``RequestCycle`` is the only reader of ``receive()`` and the only caller of ``send()``
for its request. The theory of operation (who owns which buffer, who may block, the
framing rule, disconnects and deadlines) is in ``bridge.wsgi.gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

from .._types import Environ, Headers, Message, OptExcInfo, RawHeaders, Receive, Scope, Send, Write
from ..errors import BodyError, BodyTimeout, BodyTooLarge, ClientDisconnected, ResponseError
from ..threads.admission import Admission
from .body import RequestBody
from .environ import TooManyHeaders, build_environ
from .filewrapper import FileWrapper
from .framing import CLOSE, DEFAULT_HOLD_TIME, Framing, State, plain_response
from .headers import encode_headers, parse_status

logger = logging.getLogger("bridge")

# Seconds a request body may stall between two chunks before the request fails with
# 408: nginx's client_body_timeout (60 s). A client that trickles a byte a minute
# still holds only a coroutine below request_buffer_size; past it, a thread.
DEFAULT_BODY_TIMEOUT = 60.0

# asyncio.timeout (3.11) times out an await in the current task; before 3.11 only
# wait_for, which runs the awaitable in a task of its own.
_timeout: Any = getattr(asyncio, "timeout", None)


@dataclass(frozen=True)
class Limits:
    """The per-request limits of a ``Bridge``; see ``Bridge`` for each default's reason."""

    max_body_size: int | None
    max_header_count: int
    request_buffer_size: int
    response_buffer_size: int
    retry_after: int
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    hold_time: float = DEFAULT_HOLD_TIME

    def __post_init__(self) -> None:
        timeout = self.body_timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(
                f"body_timeout must be a number of seconds above 0 (or None for no limit), "
                f"not {timeout!r}; nginx's client_body_timeout of 60 is the default."
            )


@dataclass
class Outcome:
    """What happened to one request, for metrics: replaces a status code standing for all."""

    status: int = 0  # the status sent; 0 if nothing was
    sent: int = 0  # body bytes handed to the server
    cut: bool = False  # headers went out but the body was cut (an error after them)
    client_gone: bool = False  # the client left before the response was complete

    @property
    def failed(self) -> bool:
        """A server error: a 5xx answer, or a response cut after it started."""
        return self.status >= 500 or self.cut


def content_length_of(environ: Environ) -> int | None:
    declared = environ.get("CONTENT_LENGTH")
    return int(declared) if declared and declared.isdigit() else None


class RequestCycle:
    """One HTTP request: its scope, ``receive``, ``send``, limits, body and response.

    The application's side (``start_response``, ``write``, ``push``, ``app_done``) may
    be called from a worker thread; everything else runs on the event loop.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.limits = limits
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.outcome = Outcome()
        self.body: RequestBody | None = None
        self.framing = Framing(
            head=scope["method"] == "HEAD",
            http10=scope.get("http_version") == "1.0",
            buffer_size=limits.response_buffer_size,
            hold_time=limits.hold_time,
        )
        # The framing machine is touched by the application's thread and the loop:
        # only under this lock, held for a state change and never across I/O.
        self._lock = threading.Lock()
        self._space: threading.Condition | None = None  # the thread waits for the sender
        self._drained: asyncio.Future[None] | None = None  # an async producer waits
        self._wake_pending = False  # a call_soon_threadsafe to the loop is on its way
        self._armed = False  # the hold deadline's timer is set
        self._timer: asyncio.TimerHandle | None = None
        self._sending = False  # a sender (task or inline) owns send()
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._producer: asyncio.Task[Any] | None = None  # the request's task, in stream()
        self._stopped_producer = False  # the listener cancelled it: the client left
        self._admission: Admission | None = None

    # -- admission (loop) -----------------------------------------------------------------

    def admit(self, admission: Admission) -> bool:
        """Take this request's slot; False when every slot is taken (answer 503)."""
        if not admission.enter():
            return False
        self._admission = admission
        return True

    def release(self) -> None:
        """Give the slot back (once), when the request's thread is done with it."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.leave()

    # -- the request: environ, body, refusals (loop) -----------------------------------

    async def open(self, admission: Admission | None, whole: bool) -> Environ | None:
        """Admit the request (given an ``admission``: it needs a thread), build its
        environ and receive its body (all of it if ``whole``). None when the request was
        answered instead (503, 431, 413, 408) or the client left first."""
        if admission is not None and not self.admit(admission):
            await self.answer(503)
            return None
        environ = self.environ()
        if environ is None:
            await self.answer(431)
            return None
        if not await self.receive_body(environ, whole):
            return None
        return environ

    def environ(self) -> Environ | None:
        """The WSGI environ for the scope, or None when it has too many headers (431)."""
        try:
            return build_environ(
                self.scope,
                None,
                max_header_count=self.limits.max_header_count,
                file_wrapper=FileWrapper,
            )
        except TooManyHeaders as exc:
            logger.info("Refused a request: %s", exc)
            return None

    async def answer(self, status: int) -> None:
        """Answer a request bridge will not serve (408, 413, 431, 503, 500) and close it."""
        extra: RawHeaders = [CLOSE]
        if status == 503:
            extra.append((b"retry-after", str(self.limits.retry_after).encode("ascii")))
        elif status == 500:
            extra = []
        for message in plain_response(status, extra):
            await self._send(message)

    async def receive_body(self, environ: Environ, whole: bool) -> bool:
        """Receive the body up to ``request_buffer_size`` (all of it if ``whole``) into
        ``environ["wsgi.input"]``. False when the request is already answered (413, 408)
        or the client left; the rest of a partial body arrives through the listener.
        """
        limits = self.limits
        max_size = limits.max_body_size
        declared = content_length_of(environ)
        if max_size is not None and declared is not None and declared > max_size:
            await self.answer(413)  # refused before a byte of the body is read
            return False
        try:
            if declared or "HTTP_TRANSFER_ENCODING" in environ:
                message = await self._receive(True)
            elif self.scope.get("http_version", "1.1") < "2":
                # An HTTP/1 request that declares no body has its (empty) body message
                # ready at once: no timer for it, so the common GET costs none.
                message = await self.receive()
            else:
                message = await self._receive(True)
            if message["type"] != "http.request":
                self._client_gone()
                return False
            chunk: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if max_size is not None and len(chunk) > max_size:
                    await self.answer(413)
                    return False
                body = self.body = RequestBody(chunk, buffer_size=limits.request_buffer_size)
                environ["wsgi.input"] = body
                return True
            body = self.body = RequestBody(complete=False, buffer_size=limits.request_buffer_size)
            environ["wsgi.input"] = body
            while True:
                if max_size is not None and body.size + len(chunk) > max_size:
                    await self.answer(413)
                    return False
                body.feed(chunk)
                if not message.get("more_body", False):
                    body.finish()
                    return True
                if not whole and body.size >= limits.request_buffer_size:
                    self._listen()  # the rest streams in while the application reads
                    return True
                if body.spooled:
                    await asyncio.sleep(0)  # a disk write per step, never a long stall
                message = await self._receive(True)
                if message["type"] != "http.request":
                    self._client_gone()
                    return False
                chunk = message.get("body", b"")
        except asyncio.TimeoutError:
            logger.info("A request body stalled for more than %s s: 408.", limits.body_timeout)
            await self.answer(408)
            return False

    async def _receive(self, timed: bool) -> Message:
        timeout = self.limits.body_timeout
        if not timed or timeout is None:
            return await self.receive()
        if _timeout is not None:
            async with _timeout(timeout):
                return await self.receive()
        return await asyncio.wait_for(self.receive(), timeout)  # pragma: no cover (3.10)

    def _listen(self) -> None:
        """Start the listener (once): the rest of the body, then the disconnect."""
        if self._listener is None:
            self._listener = self.loop.create_task(self._run_listener())

    async def _run_listener(self) -> None:
        body = self.body
        max_size = self.limits.max_body_size
        try:
            while body is not None and not body.complete and body.error is None:
                message = await self._receive(True)
                if message["type"] != "http.request":
                    self._client_gone()
                    return
                chunk = message.get("body", b"")
                if max_size is not None and body.size + len(chunk) > max_size:
                    self._body_failed(413, BodyTooLarge(max_size))
                    break
                body.feed(chunk)
                if not message.get("more_body", False):
                    body.finish()
                elif body.spooled:
                    await asyncio.sleep(0)
        except asyncio.TimeoutError:
            timeout = self.limits.body_timeout
            assert timeout is not None
            logger.info("A request body stalled for more than %s s: 408.", timeout)
            self._body_failed(408, BodyTimeout(timeout))
        # Once the body is in (or refused), nothing but a disconnect is of interest;
        # whatever else a server sends is dropped (without holding the loop).
        while (await self.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0)
        self._client_gone()

    def _body_failed(self, status: int, error: BodyError) -> None:
        """The request body failed while the application runs: 413 or 408 reaches the
        client if no response has started, whatever the application does about it."""
        with self._lock:
            refused = self.framing.refuse(status)
        # After the refusal, so an application that fails on the read finds it decided.
        assert self.body is not None
        self.body.fail(error)
        if refused:
            self._kick()

    def _client_gone(self) -> None:
        """The client disconnected (or the server cancelled): stop everything within a chunk."""
        self.outcome.client_gone = True
        with self._lock:
            if not self.framing.finished or self.framing.pending:
                self.framing.client_gone()
            if self._space is not None:
                self._space.notify_all()
        if self.body is not None:
            self.body.fail(ClientDisconnected("The client disconnected before the body was sent."))
        self._wake_drained()
        producer = self._producer
        # The producer itself (the current task) sees GONE at its next chunk instead.
        if producer not in (None, asyncio.current_task()) and not self._stopped_producer:
            self._stopped_producer = True
            producer.cancel()

    # -- the response: the application's side (a thread, or the loop) ------------------

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
        held to the end without waking the loop. Blocks while more than
        ``response_buffer_size`` waits for the client.
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        if not data:
            return False
        wake = throttle = False
        framing = self.framing
        with self._lock:
            done = framing.body(data, 0.0 if whole else self.clock(), whole)
            if not whole and not self._wake_pending:
                if framing.pending:
                    wake = not self._sending
                else:
                    wake = framing.deadline is not None and not self._armed
                self._wake_pending = wake
            throttle = framing.backlog > framing.buffer_size and framing.state is State.STREAMING
        if wake:
            self.loop.call_soon_threadsafe(self._on_thread_event)
        if throttle:
            self._wait_for_space()
        return done

    def send_path(self, path: str, size: int) -> bool:
        """Let the server send a whole file by path (``http.response.pathsend``)."""
        with self._lock:
            return self.framing.send_path(path, size)

    def app_done(self, error: BaseException | None, what: str = "WSGI application") -> None:
        """The application has finished (``close()`` included), or raised ``error``;
        ``what`` names it in the log."""
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
        if error is None:
            return
        method, path = self.scope["method"], self.scope.get("path", "")
        if state is State.GONE or isinstance(error, ClientDisconnected):
            logger.debug("The client disconnected before the response was complete.")
        elif state is State.REFUSED and isinstance(error, BodyError):
            logger.info("The request body failed (%s); the client was told so.", error)
        elif state is State.CUT:
            # Headers and part of the body are out: the only honest answer left is
            # to cut the response (the sender sends no final body message).
            logger.error(
                "Exception in %s after the response started, %s %s; the response was cut.",
                what,
                method,
                path,
                exc_info=error,
            )
        else:
            logger.error("Exception in %s %s %s", what, method, path, exc_info=error)

    # -- the response: the loop's side --------------------------------------------------

    def _on_thread_event(self) -> None:
        """On the loop, woken by the thread: arm the hold deadline, start or wake the sender."""
        with self._lock:
            self._wake_pending = False
            pending = self.framing.pending
            deadline = self.framing.deadline
            if deadline is not None and not self._armed:
                self._armed = True
            else:
                deadline = None
        if deadline is not None:
            self._timer = self.loop.call_later(max(deadline - self.clock(), 0.0), self._on_deadline)
        if pending:
            self._kick()

    def _on_deadline(self) -> None:
        with self._lock:
            self._timer = None
            self._armed = False
            self.framing.tick(self.clock())
            pending = self.framing.pending
            rearm = self.framing.deadline
            if rearm is not None:
                self._armed = True
        if rearm is not None:  # the clock ran early: wait the rest
            self._timer = self.loop.call_later(max(rearm - self.clock(), 0.0), self._on_deadline)
        if pending:
            self._kick()

    def _kick(self) -> None:
        """Make sure a sender is sending what the framing machine has queued."""
        if not self._sending:
            self._sending = True
            self._sender = self.loop.create_task(self._pump())
            self._listen()  # the response streams: watch for the client leaving

    async def _pump(self) -> None:
        """Send what the framing machine queues, and end once nothing is queued.

        An idle stream keeps no sender task waiting: the next chunk starts a new one
        (``_kick``), so an open, silent response costs no more than its listener.
        """
        framing = self.framing
        lock = self._lock
        while True:
            with lock:
                messages = framing.take()
                if not messages:
                    # Under the lock: a thread pushing after this sees no sender and wakes the loop.
                    self._sending = framing.finished
                    return
            sent = 0
            for message in messages:
                sent += await self._send(message)
            with lock:
                framing.sent(sent)
                space = framing.backlog <= framing.buffer_size // 2
                if space and self._space is not None:
                    self._space.notify_all()
            if space:
                self._wake_drained()

    async def _send(self, message: Message) -> int:
        """Send one message, record it in the outcome; return the body bytes in it."""
        kind = message["type"]
        size = 0
        if kind == "http.response.body":
            size = len(message.get("body", b""))
        elif kind == "http.response.start":
            self.outcome.status = message["status"]
        try:
            await self.send(message)
        except OSError:
            # uvicorn, hypercorn, daphne and granian return silently from send() once
            # the client is gone (and say so with http.disconnect); a server that
            # raises instead is treated the same way.
            self._client_gone()
            return size
        self.outcome.sent += size
        return size

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

    async def finish(self) -> Outcome:
        """After the application: send the rest of the response, stop the helpers."""
        if self._sender is not None:
            self._kick()
            await self._sender
        elif not self._sending:
            self._sending = True
            with self._lock:
                messages = self.framing.take()
                finished = self.framing.finished
            for message in messages:  # the whole response, in one go: the common case
                await self._send(message)
            if not finished:
                await self._pump()
        return self.close()

    def close(self, thread_done: bool = True) -> Outcome:
        """Stop the timer and the listener; free the body's file unless a thread may read it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        listener = self._listener
        if listener is not None and not listener.done():
            listener.cancel()
        sender = self._sender
        if sender is not None and not sender.done():
            sender.cancel()
        if thread_done and self.body is not None:
            self.body.close()
        self.outcome.cut = self.framing.state is State.CUT
        return self.outcome

    def cancelled(self) -> None:
        """The server cancelled the request: stop the thread at its next chunk or read."""
        self._client_gone()
        self.close(thread_done=False)

    # -- a whole or async body produced on the loop (views) -----------------------------

    async def respond(
        self, status: int, headers: RawHeaders, content_length: int | None, chunks: list[bytes]
    ) -> Outcome:
        """Send a response whose body is in memory: one start, one body."""
        with self._lock:
            framing = self.framing
            framing.start(status, headers, content_length)
            for chunk in chunks:
                if framing.body(chunk, 0.0, whole=True):
                    break
            error = framing.end()
        if error is not None:
            logger.error("The view's response is broken: %s", error)
        return await self.finish()

    async def stream(
        self,
        status: int,
        headers: RawHeaders,
        content_length: int | None,
        body: AsyncIterable[Any],
    ) -> Outcome:
        """Send an async iterable body under the same framing rule, in the request's task.

        An idle stream holds that task and the listener, nothing more: when the client
        leaves, the listener cancels the task, which ends the body and carries on.
        """
        self.start(status, headers, content_length)
        self._listen()
        await self._produce(body)
        return await self.finish()

    async def _produce(self, body: AsyncIterable[Any]) -> None:
        error: BaseException | None = None
        cancelled: asyncio.CancelledError | None = None
        self._producer = asyncio.current_task()
        try:
            async for chunk in body:
                data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                if self._push_on_loop(data):
                    break
                if self.framing.backlog > self.framing.buffer_size:
                    drained = self._drained = self.loop.create_future()
                    await drained
        except asyncio.CancelledError as exc:
            error = ClientDisconnected("The client disconnected during the response.")
            if not self._absorb_stop():
                cancelled = exc  # the server's own: it goes on once the body is closed
        except Exception as exc:
            error = exc
        finally:
            self._producer = None
            self._absorb_stop()  # a body that swallowed the cancellation still ends here
            close = getattr(body, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # pragma: no cover (a broken aclose)
                    error = error or exc
        self.app_done(error, "a view's response body")
        if cancelled is not None:
            self.cancelled()
            raise cancelled

    def _absorb_stop(self) -> bool:
        """Take back the listener's cancellation of the request's task, if it made one;
        True when no one else (the server) cancelled the task too."""
        if not self._stopped_producer:
            return False
        self._stopped_producer = False
        # Task.uncancel (3.11) keeps asyncio.timeout and TaskGroup right in the task;
        # before it, a cancellation carries no count to take back.
        uncancel = getattr(asyncio.current_task(), "uncancel", None)
        return uncancel is None or uncancel() == 0

    def _push_on_loop(self, data: object) -> bool:
        if type(data) is not bytes:
            data = _as_bytes(data)
        framing = self.framing
        with self._lock:
            done = framing.body(data, self.clock())
            pending = framing.pending
            deadline = framing.deadline if not self._armed else None
            if deadline is not None:
                self._armed = True
        if deadline is not None:
            self._timer = self.loop.call_later(max(deadline - self.clock(), 0.0), self._on_deadline)
        if pending:
            self._kick()
        if framing.state is State.GONE:
            raise ClientDisconnected("The client disconnected during the response.")
        return done


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"The application produced {type(data).__name__} as body data ({data!r:.40}); "
        "a response body must be bytes, so encode it first."
    )
