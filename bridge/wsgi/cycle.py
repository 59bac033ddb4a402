"""One HTTP request from arrival to outcome: admission, the environ, the body, disconnects.

``RequestCycle`` is the only reader of ``receive()``; its ``Sender`` (``sender.py``) is
the only caller of ``send()``. The theory of operation (who owns which buffer, who may
block, the framing rule, disconnects and deadlines) is in this folder's ``__init__.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._types import Environ, Message, RawHeaders, Receive, Scope, Send
from ..errors import BodyError, BodyTimeout, BodyTooLarge, ClientDisconnected
from ..threads.admission import Admission, Intake
from .body import RequestBody
from .environ import HeaderError, RequestPath, build_environ
from .filewrapper import FileWrapper
from .framing import Framing, State, closing_headers, plain_response
from .sender import Sender

if TYPE_CHECKING:
    from ..lifespan import Draining

logger = logging.getLogger("bridge")

# Seconds a request body may stall between two chunks before the request fails with
# 408: nginx's client_body_timeout (60 s). A client that trickles a byte a minute
# still holds only a coroutine below request_buffer_size; past it, a thread.
DEFAULT_BODY_TIMEOUT = 60.0
# Seconds the whole body may take to arrive, however steadily it trickles: Node.js's
# server.requestTimeout (300 s, "the timeout for receiving the entire request from the
# client"). body_timeout alone lets a byte every 59 s hold a connection for ever.
# Time a body waits, unread, for a thread (flow control) does not count.
DEFAULT_BODY_DEADLINE = 300.0

# asyncio.timeout (3.11) times out an await in the current task; before 3.11 only
# wait_for, which runs the awaitable in a task of its own.
_timeout: Any = getattr(asyncio, "timeout", None)


@dataclass(frozen=True)
class CycleLimits:
    """The per-request limits a ``RequestCycle`` keeps, from ``Bridge``'s options (checked
    there, by ``bridge.options``); see ``Bridge`` for each default's reason."""

    max_body_size: int | None
    max_header_count: int
    request_buffer_size: int
    response_buffer_size: int
    retry_after: int
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    body_deadline: float | None = DEFAULT_BODY_DEADLINE


@dataclass(slots=True)
class Outcome:
    """What happened to one request, for metrics: replaces a status code standing for all."""

    status: int = 0  # the status sent; 0 if nothing was
    sent: int = 0  # body bytes handed to the server
    cut: bool = False  # headers went out but the body was cut (an error after them)
    client_gone: bool = False  # the client left before the response was complete
    waited: float | None = None  # seconds its calls waited for a thread; None: no call

    @property
    def failed(self) -> bool:
        """A server error: a 5xx answer, or a response cut after it started."""
        return self.status >= 500 or self.cut


def content_length_of(environ: Environ) -> int | None:
    declared = environ.get("CONTENT_LENGTH")
    return int(declared) if declared and declared.isdigit() else None


class RequestCycle:
    """One HTTP request: its scope, ``receive``, path, limits, admission, body and outcome.

    The response goes through ``sender`` (a ``Sender``), which the application's
    thread feeds; everything else here runs on the event loop.
    """

    __slots__ = (
        "_admission",
        "_closed",
        "_deadline",
        "_listener",
        "_paused",
        "_producer",
        "_stopped_producer",
        "body",
        "limits",
        "loop",
        "outcome",
        "path",
        "receive",
        "scope",
        "sender",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: CycleLimits,
        path: RequestPath | None = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.limits = limits
        self.path = path  # the dispatch's ``locate(scope)``, when it has one
        self.loop = asyncio.get_running_loop()
        self.outcome = Outcome()
        self.body: RequestBody | None = None
        framing = Framing(
            head=scope["method"] == "HEAD",
            http10=scope.get("http_version") == "1.0",
            buffer_size=limits.response_buffer_size,
        )
        self.sender = Sender(framing, send, self.loop, self)
        self._listener: asyncio.Task[None] | None = None
        self._closed = False  # close() has run: no listener starts after it
        self._producer: asyncio.Task[Any] | None = None  # the request's task, in stream()
        self._stopped_producer = False  # the listener cancelled it: the client left
        self._admission: Admission | None = None
        # The whole-body deadline on the loop's clock, set by the first body wait; and
        # when reading stopped for a thread (that wait does not count against it).
        self._deadline: float | None = None
        self._paused: float | None = None

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

    async def open(
        self, admission: Admission | None, whole: bool, thread: bool = True
    ) -> Environ | None:
        """Build the environ, receive the body up to ``request_buffer_size`` (all of it if
        ``whole``) under the ``admission``'s intake budget, then, if ``thread``, take a
        thread slot. None when the request was answered instead (400, 431, 413, 408,
        503) or the client left first."""
        try:
            environ = self.environ()
        except HeaderError as exc:
            logger.info("Refused a request: %s", exc)
            await self.answer(exc.status, exc.text)
            return None
        self.path = None  # in the environ now
        intake = admission.intake if admission is not None else None
        if not await self.receive_body(environ, whole, intake):
            return None
        # Only now, with its buffered part in, does the request wait for a thread.
        if admission is not None and thread and not self.admit(admission):
            await self.answer(503, admission.refusal())
            return None
        return environ

    def environ(self) -> Environ:
        """The WSGI environ for the scope; raises ``HeaderError`` (400, 431) for headers
        bridge refuses."""
        return build_environ(
            self.scope,
            None,
            max_header_count=self.limits.max_header_count,
            file_wrapper=FileWrapper,
            path=self.path,
        )

    async def answer(self, status: int, text: str | None = None) -> None:
        """Answer a request bridge will not serve (400, 408, 413, 431, 503, 500) and close
        it; ``text`` replaces the status's usual sentence."""
        headers = closing_headers(status, self.limits.retry_after)
        for message in plain_response(status, headers, text):
            await self.sender.send(message)

    async def receive_body(
        self, environ: Environ, whole: bool, intake: Intake | None = None
    ) -> bool:
        """Receive the body up to ``request_buffer_size`` (all of it if ``whole``) into
        ``environ["wsgi.input"]``, holding a share of ``intake`` while it arrives. False
        when the request is already answered (413, 408, 503) or the client left; the rest
        of a partial body arrives through the listener once a thread reads it.
        """
        limits = self.limits
        max_size = limits.max_body_size
        declared = content_length_of(environ)
        if max_size is not None and declared is not None and declared > max_size:
            await self.answer(413)  # refused before a byte of the body is read
            return False
        # A body that is declared takes its share of the intake before the first wait
        # for it; an HTTP/2 request that declares nothing, only once it has more to come.
        share = 0
        if intake is not None and (declared or "HTTP_TRANSFER_ENCODING" in environ):
            share = min(declared or limits.request_buffer_size, limits.request_buffer_size)
            if not await self._enter(intake, share):
                return False
        try:
            if share or "HTTP_TRANSFER_ENCODING" in environ:
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
            if intake is not None and not share:
                if not await self._enter(intake, limits.request_buffer_size):
                    return False
                share = limits.request_buffer_size
            body = self.body = RequestBody(complete=False, buffer_size=limits.request_buffer_size)
            environ["wsgi.input"] = body
            return await self._receive_rest(body, message, whole)
        except asyncio.TimeoutError:
            await self._timed_out()
            return False
        finally:
            if share and intake is not None:
                intake.leave(share)

    async def _enter(self, intake: Intake, share: int) -> bool:
        """Take ``share`` of the intake; answer 503, naming the full budget, if it is full."""
        full = intake.enter(share)
        if full is None:
            return True
        logger.info("Refused a request: %s", full.strip())
        await self.answer(503, full)
        return False

    async def _receive_rest(self, body: RequestBody, message: Message, whole: bool) -> bool:
        """Go on receiving a body that has more to come, from ``message``: up to
        ``request_buffer_size``, all of it if ``whole``. Raises ``asyncio.TimeoutError``
        when it stalls or its deadline passes."""
        limits = self.limits
        max_size = limits.max_body_size
        chunk: bytes = message.get("body", b"")
        while True:
            if max_size is not None and body.size + len(chunk) > max_size:
                await self.answer(413)
                return False
            body.feed(chunk)
            if not message.get("more_body", False):
                body.finish()
                return True
            if not whole and body.size >= limits.request_buffer_size:
                # The rest is read once a thread runs the application (``reading``): a
                # request queued for a thread reads nothing more, so the server's flow
                # control holds the client back instead of bridge spooling it.
                self._paused = self.loop.time()
                return True
            if body.spooled:
                await asyncio.sleep(0)  # a disk write per step, never a long stall
            message = await self._receive(True)
            if message["type"] != "http.request":
                self._client_gone()
                return False
            chunk = message.get("body", b"")

    async def _timed_out(self) -> None:
        """The body stalled, or took longer than ``body_deadline``, before the application
        ran: 408, saying which."""
        text = self._timeout_text()
        logger.info("Refused a request: %s", text.strip())
        await self.answer(408, text)

    def _timeout_text(self) -> str:
        limits = self.limits
        if self._deadline is not None and self.loop.time() >= self._deadline:
            return (
                f"Request Timeout: the request body took longer than "
                f"body_deadline={limits.body_deadline} s to arrive.\n"
            )
        return (
            f"Request Timeout: the request body stalled for more than "
            f"body_timeout={limits.body_timeout} s.\n"
        )

    async def _receive(self, timed: bool) -> Message:
        limits = self.limits
        timeout = limits.body_timeout
        if timed and limits.body_deadline is not None:
            now = self.loop.time()
            if self._deadline is None:
                self._deadline = now + limits.body_deadline
            left = self._deadline - now
            if left <= 0:
                raise asyncio.TimeoutError
            timeout = left if timeout is None else min(timeout, left)
        if not timed or timeout is None:
            return await self.receive()
        if _timeout is not None:
            async with _timeout(timeout):
                return await self.receive()
        return await asyncio.wait_for(self.receive(), timeout)  # pragma: no cover (3.10)

    def reading(self) -> None:
        """From the application's thread as it starts: receive the rest of a body that
        was left unread while the request waited for a thread."""
        body = self.body
        if body is not None and not body.complete and self._listener is None:
            self.loop.call_soon_threadsafe(self._resume)

    def _resume(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and self._deadline is not None:
            self._deadline += self.loop.time() - paused  # the wait was ours, not the client's
        self._listen()

    def _listen(self) -> None:
        """Start the listener (once): the rest of the body, then the disconnect."""
        if self._listener is None and not self._closed:
            body = self.body
            if body is None or body.complete:
                # The common case, and an open stream's whole cost here: the smallest
                # coroutine that can wait for the disconnect.
                listening = self._await_disconnect()
            else:
                listening = self._receive_rest_then_disconnect(body)
            self._listener = self.loop.create_task(listening)

    async def _receive_rest_then_disconnect(self, body: RequestBody) -> None:
        max_size = self.limits.max_body_size
        try:
            while not body.complete and body.error is None:
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
            text = self._timeout_text()
            logger.info("Refused a request: %s", text.strip())
            limits = self.limits
            expired = "body_deadline" in text
            seconds = limits.body_deadline if expired else limits.body_timeout
            assert seconds is not None
            self._body_failed(408, BodyTimeout(seconds))
        del body  # a long response does not keep the request body for its listener
        await self._await_disconnect()

    async def _await_disconnect(self) -> None:
        # Once the body is in (or refused), nothing but a disconnect is of interest;
        # whatever else a server sends is dropped (without holding the loop).
        while (await self.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0)
        self._client_gone()

    def _body_failed(self, status: int, error: BodyError) -> None:
        """The request body failed while the application runs: 413 or 408 reaches the
        client if no response has started, whatever the application does about it."""
        refused = self.sender.body_failed(status)
        # After the refusal, so an application that fails on the read finds it decided.
        assert self.body is not None
        self.body.fail(error)
        if refused:
            self.sender.kick()

    def _client_gone(self) -> None:
        """The client disconnected (or the server cancelled): stop everything within a chunk."""
        self.outcome.client_gone = True
        self.sender.client_gone()
        if self.body is not None:
            self.body.fail(ClientDisconnected("The client disconnected before the body was sent."))
        producer = self._producer
        # The producer itself (the current task) sees the client gone at its next chunk.
        if producer not in (None, asyncio.current_task()) and not self._stopped_producer:
            self._stopped_producer = True
            producer.cancel()

    # What the sender tells its owner (sender.Owner): the response streams, or its
    # send found the client gone.
    on_stream = _listen
    on_gone = _client_gone

    # -- the outcome ----------------------------------------------------------------------

    def app_done(self, error: BaseException | None, what: str = "WSGI application") -> None:
        """The application has finished (``close()`` included), or raised ``error``;
        ``what`` names it in the log."""
        error, state = self.sender.end(error)
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

    async def finish(self) -> Outcome:
        """After the application: send the rest of the response, stop the helpers."""
        await self.sender.finish()
        return self.close()

    def close(self, thread_done: bool = True) -> Outcome:
        """Stop the sender and the listener; free the body's file unless a thread may read it."""
        sender = self.sender
        cut = sender.close()
        # Cancelled, the listener keeps a traceback whose frame holds this cycle: let go
        # of it, so the request is freed when it ends, not by the garbage collector.
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None and not listener.done():
            listener.cancel()
        if thread_done and self.body is not None:
            self.body.close()
        outcome = self.outcome
        outcome.status = sender.status
        outcome.sent = sender.sent
        outcome.cut = cut
        return outcome

    def cancelled(self) -> None:
        """The server cancelled the request: stop the thread at its next chunk or read."""
        self._client_gone()
        self.close(thread_done=False)

    # -- a whole or async body produced on the loop (views) -----------------------------

    async def respond(
        self, status: int, headers: RawHeaders, content_length: int | None, chunks: list[bytes]
    ) -> Outcome:
        """Send a response whose body is in memory: one start, one body."""
        error = self.sender.whole(status, headers, content_length, chunks)
        if error is not None:
            logger.error("The view's response is broken: %s", error)
        return await self.finish()

    async def stream(
        self,
        status: int,
        headers: RawHeaders,
        content_length: int | None,
        body: AsyncIterable[Any],
        drain: Draining | None = None,
    ) -> Outcome:
        """Send an async iterable body under the same framing rule, in the request's task.

        An idle stream holds that task, this frame and the listener, nothing more: when
        the client leaves, the listener cancels the task, which ends the body and
        carries on; when the server shuts down, ``drain`` ends it with its final chunk.
        """
        sender = self.sender
        sender.start(status, headers, content_length)
        del headers  # the framing machine lets go of them once they are out
        received = self.body
        if received is not None and received.complete and not received.spooled:
            # Whole and in memory: nothing to close or to fail later, so the stream does
            # not keep it (a body that reads the request keeps it through the request).
            self.body = None
        del received
        self._listen()
        error: BaseException | None = None
        cancelled: asyncio.CancelledError | None = None
        task = self._producer = asyncio.current_task()
        iterator = body.__aiter__()
        try:
            while drain is None or drain.hold(task):
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if drain is None or not drain.started or self._stopped_producer:
                        raise
                    _uncancel(task)  # the drain's: the body ends, the response completes
                    break
                finally:
                    if drain is not None:
                        drain.release(task)
                data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                if sender.push_on_loop(data):
                    break
                await sender.drained()
        except asyncio.CancelledError as exc:
            error = ClientDisconnected("The client disconnected during the response.")
            if not self._absorb_stop():
                cancelled = exc  # the server's own: it goes on once the body is closed
        except Exception as exc:
            error = exc
        finally:
            self._producer = None
            self._absorb_stop()  # a body that swallowed the cancellation still ends here
            close = getattr(iterator, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # pragma: no cover (a broken aclose)
                    error = error or exc
        self.app_done(error, "a view's response body")
        if cancelled is not None:
            self.cancelled()
            raise cancelled
        return await self.finish()

    def _absorb_stop(self) -> bool:
        """Take back the listener's cancellation of the request's task, if it made one;
        True when no one else (the server) cancelled the task too."""
        if not self._stopped_producer:
            return False
        self._stopped_producer = False
        return _uncancel(asyncio.current_task()) == 0


def _uncancel(task: asyncio.Task[Any] | None) -> int:
    """Take back one cancellation of ``task``: the count left (0 before Python 3.11)."""
    # Task.uncancel (3.11) keeps asyncio.timeout and TaskGroup right in the task;
    # before it, a cancellation carries no count to take back.
    uncancel = getattr(task, "uncancel", None)
    return 0 if uncancel is None else int(uncancel())
