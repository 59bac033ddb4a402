"""Serve one HTTP request through the legacy WSGI application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._types import Environ, Receive, Scope, Send, WSGIApp
from .body import RequestBody
from .environ import TooManyHeaders, build_environ
from .errors import BodyTooLarge, ClientDisconnected, ResponseError
from .filewrapper import FileWrapper
from .response import Responder, iterate, plain_response_messages
from .threads import ThreadPool

logger = logging.getLogger("bridge")


@dataclass(frozen=True)
class Limits:
    """The per-request limits of a ``Bridge``; see ``Bridge`` for each default's reason."""

    max_body_size: int | None
    max_header_count: int
    request_buffer_size: int
    response_buffer_size: int
    retry_after: int


def call_app(app: WSGIApp, environ: Environ, responder: Responder, extensions: Any) -> None:
    """Call the application and drive its iterable; runs in a pool thread.

    PEP 3333: "If the iterable returned by the application has a close() method, the
    server or gateway must call that method upon completion of the current request,
    whether the request was completed normally, or terminated early due to an
    application error during iteration or an early disconnect of the browser."
    """
    try:
        iterable: Iterable[bytes] = app(environ, responder.start_response)
        try:
            iterate(responder, iterable, extensions)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
    finally:
        responder.finish_in_thread()


def environ_or_none(scope: Scope, limits: Limits) -> Environ | None:
    """The environ for ``scope``, or None when it has too many headers (answer 431)."""
    try:
        return build_environ(
            scope, None, max_header_count=limits.max_header_count, file_wrapper=FileWrapper
        )
    except TooManyHeaders as exc:
        logger.info("Refused a request: %s", exc)
        return None


def content_length_of(environ: Environ) -> int | None:
    declared = environ.get("CONTENT_LENGTH")
    return int(declared) if declared and declared.isdigit() else None


REFUSALS = {
    413: "Request Entity Too Large\n",
    431: "Request Header Fields Too Large\n",
    503: "Service Unavailable: every worker thread is busy; retry shortly.\n",
}


async def refuse(send: Send, status: int, retry_after: int = 1) -> int:
    """Answer a request bridge will not serve (413, 431, 503) and close the connection.

    Closing matters: otherwise the server reads and discards whatever body the client
    goes on sending, and a chunked upload has no end it must reach.
    """
    headers = [(b"connection", b"close")]
    if status == 503:
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    await send_plain(send, status, REFUSALS[status], headers)
    return status


async def prepare(
    scope: Scope, receive: Receive, send: Send, limits: Limits, whole: bool
) -> tuple[Environ, RequestBody] | int:
    """The environ and the start of the body (all of it if ``whole``), or the status
    already answered instead (413, 431; 0 if the client left first)."""
    environ = environ_or_none(scope, limits)
    if environ is None:
        return await refuse(send, 431)
    body = await read_body_start(receive, limits, content_length_of(environ), whole)
    if body is None:
        return 0  # the client left before its request was complete
    if isinstance(body, int):
        return await refuse(send, 413)
    environ["wsgi.input"] = body
    return environ, body


async def send_plain(send: Send, status: int, text: str, headers: Any = None) -> None:
    start, body = plain_response_messages(status, text, headers)
    await send(start)
    await send(body)


async def read_body_start(
    receive: Receive, limits: Limits, content_length: int | None, whole: bool = False
) -> RequestBody | int | None:
    """Receive the body up to ``request_buffer_size`` (or all of it, if ``whole``).

    Returns the body (complete, or streaming with the rest to be pumped), a status
    code to answer instead (413), or None if the client has already gone.
    """
    max_body_size = limits.max_body_size
    if max_body_size is not None and content_length is not None and content_length > max_body_size:
        return 413  # refused before a byte of the body is read
    message = await receive()
    if message["type"] != "http.request":
        return None
    chunk: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if max_body_size is not None and len(chunk) > max_body_size:
            return 413
        return RequestBody(chunk)
    chunks = [chunk]
    size = len(chunk)
    while whole or size < limits.request_buffer_size:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if max_body_size is not None and size > max_body_size:
            return 413
        if not message.get("more_body", False):
            return RequestBody(b"".join(chunks))
    body = RequestBody(b"".join(chunks), complete=False)
    body.received = size
    return body


async def listen(
    receive: Receive, body: RequestBody, responder: Responder, max_body_size: int | None
) -> None:
    """Pump the rest of a streaming body, then wait for the client to go away."""
    if body.streaming:
        await body.pump(receive, max_body_size)
    await disconnected(receive)
    body.fail(ClientDisconnected("The client disconnected before the body was sent."))
    responder.client_gone()


async def disconnected(receive: Receive) -> None:
    """Return when the client goes away; once the body is in, nothing else can arrive."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_legacy(
    app: WSGIApp,
    pool: ThreadPool,
    limits: Limits,
    scope: Scope,
    receive: Receive,
    send: Send,
    extra: Environ | None = None,
) -> int:
    """Answer one HTTP request with a WSGI application (the legacy one, most often).

    ``extra`` is added to the environ: the path values of a route served in the
    legacy middleware. Returns the status sent, 0 if the client left first.
    """
    if not pool.has_room():
        return await refuse(send, 503, limits.retry_after)
    prepared = await prepare(scope, receive, send, limits, whole=False)
    if isinstance(prepared, int):
        return prepared
    environ, body = prepared
    if extra:
        environ.update(extra)
    return await run_wsgi(app, pool, limits, environ, body, scope, receive, send)


async def run_wsgi(
    app: WSGIApp,
    pool: ThreadPool,
    limits: Limits,
    environ: Environ,
    body: RequestBody,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> int:
    """Run a WSGI application in a thread for an environ whose body has started."""
    environ["wsgi.input"] = body
    loop = asyncio.get_running_loop()
    responder = Responder(loop, send, scope["method"], limits.response_buffer_size)
    listener: asyncio.Task[None] | None = None

    def start_listener() -> None:
        nonlocal listener
        if listener is None:
            listener = loop.create_task(listen(receive, body, responder, limits.max_body_size))

    responder.on_stream = start_listener
    if body.streaming:
        start_listener()
    try:
        return await exchange(app, pool, environ, body, responder, scope.get("extensions") or {})
    finally:
        if listener is not None:
            listener.cancel()


async def exchange(
    app: WSGIApp,
    pool: ThreadPool,
    environ: Environ,
    body: RequestBody,
    responder: Responder,
    extensions: Any,
) -> int:
    """Run the application in a thread and send what it produced; return the status sent."""
    error: BaseException | None = None
    try:
        await pool.run(call_app, app, environ, responder, extensions)
    except asyncio.CancelledError:
        # The server gave up on this request: stop the thread at its next chunk.
        responder.client_gone()
        # The body itself, not environ["wsgi.input"]: middleware may have replaced it.
        body.fail(ClientDisconnected("The request was cancelled."))
        raise
    except Exception as exc:
        error = exc

    if error is None:
        if responder.streaming:
            if await responder.finish_streaming() or responder.gone:
                return responder.status_code
            error = ResponseError(
                f"The application declared a Content-Length of {responder.content_length} "
                f"bytes but produced {responder.written}."
            )
        elif responder.gone:
            return 0
        elif not responder.status_code:
            error = ResponseError("The application returned without calling start_response().")
        elif (
            responder.body_allowed
            and responder.content_length is not None
            and responder.written < responder.content_length
        ):
            error = ResponseError(
                f"The application declared a Content-Length of {responder.content_length} "
                f"bytes but produced {responder.written}."
            )
        else:
            await responder.send_whole()
            return responder.status_code

    if isinstance(error, ClientDisconnected) or responder.gone:
        logger.debug("The client disconnected before the response was complete.")
        if responder.streaming:
            await responder.finish_streaming()
            return responder.status_code
        return 0
    if responder.streaming:
        # Headers and part of the body are out: the only honest answer left is to
        # cut the response, so the client sees a truncated body, never a short one
        # that looks complete. Returning without the final body message makes
        # uvicorn, hypercorn and granian close the connection without the last
        # chunk. Raising would do the same, but daphne 4.2 then loses its
        # application checker for the rest of the process (docs/compatibility.md).
        await responder.finish_streaming(abort=True)
        logger.error(
            "Exception in WSGI application after the response started, %s %s; "
            "the response was cut.",
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            exc_info=error,
        )
        return 500  # what was sent says 200, but for counting this is a server error
    if isinstance(error, BodyTooLarge):
        return await refuse(responder.send, 413)
    logger.error(
        "Exception in WSGI application %s %s",
        environ["REQUEST_METHOD"],
        environ["PATH_INFO"],
        exc_info=error,
    )
    await send_plain(responder.send, 500, "Internal Server Error\n")
    return 500
