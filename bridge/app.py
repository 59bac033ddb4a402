"""``Bridge``: the ASGI application that serves a legacy WSGI app, and new async code beside it."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from ._types import Receive, Scope, Send, WSGIApp
from .body import DEFAULT_HIGH_WATER
from .environ import DEFAULT_MAX_HEADER_COUNT
from .legacy import Limits, serve_legacy
from .response import DEFAULT_RESPONSE_BUFFER
from .threads import DEFAULT_MAX_PENDING, DEFAULT_MAX_THREADS, ThreadPool

logger = logging.getLogger("bridge")

Hook = Callable[[], Any]

# The largest request body accepted by default. gunicorn sets no limit and nginx
# 1 MiB (client_max_body_size); 1 GiB lets existing upload forms keep working
# while still refusing an endless body. Set None for no limit.
DEFAULT_MAX_BODY_SIZE = 1024 * 1024 * 1024

# Seconds a client is told to wait after a 503 (RFC 9110 10.2.3).
DEFAULT_RETRY_AFTER = 1

# How long shutdown waits for requests still running in threads; gunicorn's
# --graceful-timeout is 30 seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class Bridge:
    """An ASGI 3 application that serves ``wsgi_app`` from a bounded pool of threads.

    Arguments, each keyword-only, with its default and when to change it:

    * ``max_threads=32``: threads running the legacy app at once. Raise it for apps
      that mostly wait on I/O (a database, an HTTP API); each thread costs a stack.
    * ``max_pending=2048``: requests that may wait for a thread; the next gets 503
      with ``Retry-After``. Lower it to shed load sooner.
    * ``max_body_size=1 GiB``: larger request bodies get 413. ``None`` for no limit.
    * ``max_header_count=100``: header fields per request (gunicorn's default); 431 past it.
    * ``request_buffer_size=1 MiB``: a body up to this size is received before a thread
      is taken, so slow uploads do not hold threads.
    * ``response_buffer_size=1 MiB``: a response up to this size is handed to the server
      whole, so slow downloads do not hold threads.
    * ``retry_after=1``: seconds in the ``Retry-After`` of a 503.
    * ``on_startup``, ``on_shutdown``: callables (sync or async) run on ASGI lifespan.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        request_buffer_size: int = DEFAULT_HIGH_WATER,
        response_buffer_size: int = DEFAULT_RESPONSE_BUFFER,
        retry_after: int = DEFAULT_RETRY_AFTER,
        on_startup: Sequence[Hook] = (),
        on_shutdown: Sequence[Hook] = (),
    ) -> None:
        if not callable(wsgi_app):
            raise TypeError(
                f"Bridge() needs a WSGI application, a callable (environ, start_response); "
                f"got {wsgi_app!r}."
            )
        self.wsgi_app = wsgi_app
        self.pool = ThreadPool(max_threads, max_pending)
        self.limits = Limits(
            max_body_size=max_body_size,
            max_header_count=max_header_count,
            request_buffer_size=request_buffer_size,
            response_buffer_size=response_buffer_size,
            retry_after=retry_after,
        )
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)

    @property
    def max_threads(self) -> int:
        return self.pool.max_threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await serve_legacy(self.wsgi_app, self.pool, self.limits, scope, receive, send)
        elif kind == "websocket":
            await self._refuse_websocket(receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"bridge cannot serve ASGI scopes of type {kind!r}.")

    async def _refuse_websocket(self, receive: Receive, send: Send) -> None:
        """A WSGI app cannot speak websocket: refuse the handshake (the server answers 403)."""
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await _call_hook(hook)
                except Exception as exc:
                    logger.exception("A startup hook failed.")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._drain()
                try:
                    for hook in self.on_shutdown:
                        await _call_hook(hook)
                except Exception as exc:
                    logger.exception("A shutdown hook failed.")
                    self.pool.shutdown()
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                self.pool.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _drain(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Wait for requests still in threads to finish, up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pool.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.pool.in_flight:
            logger.warning(
                "%d requests were still running in threads after %.0f s of shutdown.",
                self.pool.in_flight,
                timeout,
            )


async def _call_hook(hook: Hook) -> None:
    if inspect.iscoroutinefunction(hook):
        await hook()
        return
    result = await sync_to_async(hook)()
    if isinstance(result, Awaitable):
        await result
