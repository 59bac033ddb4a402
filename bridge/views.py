"""Run a migrated view: build its request, call it, and send its response; and the
websocket views (``serve_websocket``).

An ``async def`` view runs on the event loop, inside ``pool.request_context()``, so
``sync_to_async(thread_sensitive=True)`` calls it makes (the legacy ORM, say) all run
on one pool thread lent to the request, waited for like any other, and thread-local
connections behave as in the legacy app. A plain ``def`` view runs in the pool.
A view routed through the legacy middleware becomes a WSGI app (``as_wsgi``) and is
served exactly like the legacy app; an async view there runs on the server's loop
through ``async_to_sync`` while its thread waits.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterator
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from ._types import Environ, Receive, Scope, Send, WSGIApp
from .lifespan import draining
from .requests import Request
from .routing import Route, View, WebSocketRoute
from .stepping import Stepper
from .threads.admission import Admission
from .threads.pool import ThreadPool
from .websockets import WebSocket, WebSocketDisconnect, reject_handshake
from .wsgi.body import RequestBody
from .wsgi.cycle import CycleLimits, Outcome, RequestCycle
from .wsgi.environ import HeaderError, RequestPath, build_environ
from .wsgi.gateway import run_wsgi
from .wsgi.headers import encode_headers

logger = logging.getLogger("bridge")


def make_response(result: object, view: View) -> Response:
    """Turn what a view returned into a werkzeug ``Response``."""
    if isinstance(result, Response):
        return result
    if isinstance(result, (str, bytes)):
        return Response(result, mimetype="text/html")
    if isinstance(result, (dict, list)):
        return Response(json.dumps(result), mimetype="application/json")
    raise TypeError(
        f"The view {view.__qualname__} returned {type(result).__name__}; "
        "return a werkzeug Response (or str, bytes, dict or list)."
    )


def as_wsgi(view: View, request_class: type[Request]) -> WSGIApp:
    """A WSGI app that answers with ``view``, to be wrapped in the legacy middleware."""
    is_async = inspect.iscoroutinefunction(view)
    call = async_to_sync(view) if is_async else view

    def app(environ: Environ, start_response: Any) -> Any:
        request = request_class(environ)
        values: dict[str, Any] = environ.get("bridge.path_params", {})
        request.path_params = values
        try:
            result = call(request, **values)
        except HTTPException as exc:
            result = exc.get_response(environ)
        response = make_response(result, view)
        if hasattr(response.response, "__aiter__"):
            # The middleware stack iterates in this thread: pull each chunk of the
            # async body from the server's loop, as the view itself ran there.
            response.response = _pull(response.response)  # type: ignore[arg-type]
        # Uploaded files are closed once the response is done with.
        return ClosingIterator(response(environ, start_response), request.close)

    return app


def _pull(body: AsyncIterator[Any]) -> Iterator[Any]:
    """Iterate an async body from a worker thread, one ``async_to_sync`` per chunk."""

    async def next_chunk() -> Any:
        return await body.__anext__()

    async def close() -> None:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()

    pull = async_to_sync(next_chunk)
    try:
        while True:
            try:
                chunk = pull()
            except StopAsyncIteration:
                return
            yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk
    finally:
        async_to_sync(close)()


def _call_sync_view(view: View, request: Request, values: dict[str, Any]) -> Any:
    return view(request, **values)


def serve_view(
    cycle: RequestCycle,
    route: Route,
    values: dict[str, Any],
    pool: ThreadPool,
    admission: Admission,
    request_class: type[Request],
) -> Coroutine[Any, Any, Outcome]:
    """Answer one request with a migrated (not middleware-wrapped) view.

    Its body arrives under the intake budget, as a legacy request's does; then a sync
    view takes a thread slot, and an async view, which runs on the loop, takes none.
    """
    return _Serving(cycle, _answer(cycle, route, values, pool, admission, request_class))


class _Sending(NamedTuple):
    """The view has answered: what sends its response, and the request, to close its
    uploaded files at the end (held weakly unless it parsed some)."""

    sending: Coroutine[Any, Any, Outcome]
    held: weakref.ref[Request]
    uploads: Request | None


async def _answer(
    cycle: RequestCycle,
    route: Route,
    values: dict[str, Any],
    pool: ThreadPool,
    admission: Admission,
    request_class: type[Request],
) -> Outcome | _Sending:
    """The body, the view and its response: an ``Outcome`` when the request is answered
    already (refused, or the view failed), else what sends the response."""
    environ = await cycle.open(admission, whole=True, thread=not route.is_async)
    if environ is None:
        return cycle.close()
    request = request_class(environ)
    request.path_params = values
    context: contextvars.Context | None = None
    try:
        if route.is_async:
            async with pool.request_context():
                result = await route.view(request, **values)
        else:
            # The view runs, and its response iterates, in one context of its own.
            context = contextvars.copy_context()
            result = await pool.run(
                context.run, _call_sync_view, route.view, request, values, waits=cycle.outcome
            )
            cycle.release()
        response = make_response(result, route.view)
    except HTTPException as exc:
        response = exc.get_response(environ)
    except Exception:
        logger.exception("Exception in view %s for %s", route.view.__qualname__, route.rule)
        request.close()
        await cycle.answer(500)
        return cycle.close()
    # From here only the response's body may need the request: held weakly, a stream
    # whose body does not refer to it keeps no request or environ alive. Parsed uploads
    # keep it, so their files are closed at the end, not by the collector.
    uploads = request if "files" in request.__dict__ else None
    sending = send_response(cycle, response, environ, pool, admission, context)
    return _Sending(sending, weakref.ref(request), uploads)


class _Serving(Stepper, Coroutine[Any, Any, Outcome]):
    """``serve_view``'s coroutine: ``_answer``, then the response's sending, as if the
    first awaited the second, but a long response (an open SSE stream) keeps this
    object and not a suspended frame of the first (0.3 KiB). At the end, whatever the
    way, the request's uploads are closed and its thread slot is given back."""

    __slots__ = ("_coro", "_cycle", "_held", "_uploads")

    def __init__(self, cycle: RequestCycle, answer: Coroutine[Any, Any, Outcome | _Sending]):
        self._cycle = cycle
        self._coro: Coroutine[Any, Any, Any] = answer
        self._held: weakref.ref[Request] | None = None
        self._uploads: Request | None = None

    def _step(self, value: Any, error: BaseException | None) -> Any:
        try:
            if error is None:
                return self._coro.send(value)
            return self._coro.throw(error)
        except StopIteration as stop:
            result = stop.value
        except BaseException:
            self._end()
            raise
        # Outside the handler: the sending's first step runs with no exception in hand.
        return self._then(result)

    def close(self) -> None:
        try:
            self._coro.close()
        finally:
            self._end()

    def _then(self, result: Outcome | _Sending) -> Any:
        if isinstance(result, _Sending):
            self._coro, self._held, self._uploads = result
            del result
            return self._step(None, None)  # the sending's first step is this step's rest
        self._end()
        raise StopIteration(result)

    def _end(self) -> None:
        held, self._held, self._uploads = self._held, None, None
        alive = held() if held is not None else None
        if alive is not None:
            alive.close()  # the uploaded files spooled to disk
        self._cycle.release()


def send_response(
    cycle: RequestCycle,
    response: Response,
    environ: Environ,
    pool: ThreadPool,
    admission: Admission,
    context: contextvars.Context | None = None,
) -> Coroutine[Any, Any, Outcome]:
    """Send a view's response: on the loop when its body is in memory or async; a
    synchronous iterator in a thread, in ``context`` (the sync view's) if given.

    It returns the coroutine that sends, so an open stream keeps no frame of it."""
    body = response.response
    if not (response.is_sequence or hasattr(body, "__aiter__")):
        # A synchronous iterator may block: iterate it in a thread, as WSGI, with a
        # slot of its own.
        if not cycle.admit(admission):
            return _refuse(cycle, 503, admission.refusal())
        return run_wsgi(cycle, pool, response, environ, context)
    try:
        headers, length = encode_headers(response.get_wsgi_headers(environ).to_wsgi_list())
    except Exception:
        logger.exception("The view's response has invalid headers.")
        return _refuse(cycle, 500)
    if response.is_sequence:
        return cycle.respond(response.status_code, headers, length, list(response.iter_encoded()))
    # An open stream needs its body alone: neither the response nor the environ.
    # An endless stream (an SSE feed) ends with its final chunk when the server stops.
    stream: AsyncIterable[Any] = body  # type: ignore[assignment]  # it has __aiter__
    return cycle.stream(response.status_code, headers, length, stream, draining())


async def _refuse(cycle: RequestCycle, status: int, text: str | None = None) -> Outcome:
    await cycle.answer(status, text)
    return cycle.close()


async def serve_websocket(
    route: WebSocketRoute,
    values: dict[str, Any],
    path: RequestPath,
    scope: Scope,
    receive: Receive,
    send: Send,
    limits: CycleLimits,
    request_class: type[Request],
) -> Outcome:
    """Run a websocket view; the outcome's status is 101 (switched protocols), 400 or 431
    if the handshake was refused, or 500 if the view raised."""
    try:
        # Its checks decide the handshake; the environ itself is not kept (2 KiB).
        _handshake_environ(scope, path, limits)
    except HeaderError as exc:
        logger.info("Refused a websocket handshake: %s", exc)
        await reject_handshake(scope, receive, send, exc.status, exc.text)
        return Outcome(exc.status)
    # Built when the view first reads socket.request; many idle sockets never do. One
    # partial, not closures over the arguments, is what an idle socket keeps for it.
    handshake = functools.partial(_handshake, scope, values, path, limits, request_class)
    socket = WebSocket(scope, receive, send, handshake)
    socket.path_params = values
    try:
        await route.view(socket, **values)
    except WebSocketDisconnect:
        return Outcome(101)
    except Exception:
        logger.exception("Exception in websocket view %s", route.view.__qualname__)
        if not socket.closed:
            # 1011: "the server is terminating the connection because it
            # encountered an unexpected condition" (RFC 6455 7.4.1).
            await socket.close(1011 if socket.accepted else 1000)
        return Outcome(500)
    if not socket.closed:
        await socket.close(1000)
    return Outcome(101)


def _handshake_environ(scope: Scope, path: RequestPath, limits: CycleLimits) -> Environ:
    """A websocket handshake's environ; raises ``HeaderError`` for headers bridge refuses."""
    return build_environ(
        {**scope, "method": "GET"},
        RequestBody(),
        max_header_count=limits.max_header_count,
        path=path,
    )


def _handshake(
    scope: Scope,
    values: dict[str, Any],
    path: RequestPath,
    limits: CycleLimits,
    request_class: type[Request],
) -> Request:
    """A websocket's handshake as a ``Request`` (``WebSocket.request``)."""
    request = request_class(_handshake_environ(scope, path, limits))
    request.path_params = values
    return request


async def no_websocket(receive: Receive, send: Send) -> None:
    """No websocket route or mount here, and a WSGI app cannot speak it: refuse the
    handshake (the server answers 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1000})
