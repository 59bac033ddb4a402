"""Run a migrated view: build its request, call it, and send its response.

An ``async def`` view runs on the event loop, inside a per-request
``ThreadSensitiveContext``, so ``sync_to_async(thread_sensitive=True)`` calls it makes
(the legacy ORM, say) all run on one thread of their own and thread-local
connections behave as in the legacy app. A plain ``def`` view runs in the pool.
A view routed through the legacy middleware becomes a WSGI app (``as_wsgi``) and is
served exactly like the legacy app; an async view there runs on the server's loop
through ``async_to_sync`` while its thread waits.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from ._types import Environ, Receive, Scope, Send, WSGIApp
from .body import RequestBody
from .gateway import Limits, disconnected, prepare, refuse, run_wsgi, send_plain
from .headers import carries_body, encode_headers
from .requests import Request
from .routing import Route, View
from .threads import ThreadPool

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
        # Uploaded files are closed once the response is done with.
        return ClosingIterator(response(environ, start_response), request.close)

    return app


def _call_sync_view(view: View, request: Request, values: dict[str, Any]) -> Any:
    return view(request, **values)


async def serve_view(
    route: Route,
    values: dict[str, Any],
    pool: ThreadPool,
    limits: Limits,
    request_class: type[Request],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> int:
    """Answer one request with a migrated (not middleware-wrapped) view; return the status."""
    prepared = await prepare(scope, receive, send, limits, whole=True)
    if isinstance(prepared, int):
        return prepared
    environ, _ = prepared
    request = request_class(environ)
    request.path_params = values
    with request:  # closes the uploaded files spooled to disk
        try:
            if route.is_async:
                async with pool.request_context():
                    result = await route.view(request, **values)
            elif not pool.has_room():
                return await refuse(send, 503, limits.retry_after)
            else:
                result = await pool.run(_call_sync_view, route.view, request, values)
            response = make_response(result, route.view)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except Exception:
            logger.exception("Exception in view %s for %s", route.view.__qualname__, route.rule)
            await send_plain(send, 500, "Internal Server Error\n")
            return 500
        return await send_response(response, environ, pool, limits, scope, receive, send)


async def send_response(
    response: Response,
    environ: Environ,
    pool: ThreadPool,
    limits: Limits,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> int:
    """Send a view's response: on the loop when its body is in memory or async."""
    body = response.response
    if not (response.is_sequence or hasattr(body, "__aiter__")):
        # A synchronous iterator may block: iterate it in a thread, as WSGI.
        return await run_wsgi(response, pool, limits, environ, RequestBody(), scope, receive, send)
    status = response.status_code
    try:
        headers, _ = encode_headers(response.get_wsgi_headers(environ).to_wsgi_list())
    except Exception:
        logger.exception("The view's response has invalid headers.")
        await send_plain(send, 500, "Internal Server Error\n")
        return 500
    has_body = carries_body(environ["REQUEST_METHOD"] == "HEAD", status)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if response.is_sequence:
        data = b"".join(response.iter_encoded()) if has_body else b""
        await send({"type": "http.response.body", "body": data})
        return status
    try:
        if not has_body:
            await send({"type": "http.response.body", "body": b""})
        else:
            await stream_until_disconnect(body, receive, send)
    finally:
        close: Callable[[], Any] | None = getattr(body, "aclose", None)
        if close is not None:
            await close()
    return status


async def stream_until_disconnect(body: Any, receive: Receive, send: Send) -> None:
    """Send an async iterable body, and stop it as soon as the client goes away."""

    async def pump() -> None:
        async for chunk in body:
            data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    streaming = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not streaming.done():
            streaming.cancel()
            # Let the generator's own finally blocks run before it is closed.
            await asyncio.wait({streaming})
    if streaming.cancelled():
        return
    error = streaming.exception()
    if error is not None and not isinstance(error, OSError):  # OSError: the client is gone
        raise error
