"""``Bridge``: the ASGI application that serves a legacy WSGI app, and new async code beside it."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from ._types import ASGIApp, Receive, Scope, Send, WSGIApp
from .broadcast.hub import Broadcast
from .lifespan import MountedLifespan, unsupported_event_loop
from .metrics.registry import Metrics
from .mounts import within_limits
from .options import check_options
from .pages.access import AccessPolicy
from .pages.dashboard import Endpoints
from .requests import Request
from .routing import Middleware, Mount, Route, Router, View, WebSocketRoute
from .shadow.config import Shadow
from .shadow.runner import DEFAULT_MAX_SHADOWS, Shadows
from .threads.admission import Admission
from .threads.pool import DEFAULT_MAX_PENDING, DEFAULT_MAX_THREADS, ThreadPool
from .threads.sizing import adaptive_gate
from .views import as_wsgi, serve_view
from .websockets import WebSocket, WebSocketDisconnect, refuse_handshake
from .wsgi.body import DEFAULT_REQUEST_BUFFER, RequestBody
from .wsgi.cycle import DEFAULT_BODY_TIMEOUT, Limits, Outcome, RequestCycle
from .wsgi.environ import DEFAULT_MAX_HEADER_COUNT, build_environ, route_path
from .wsgi.framing import DEFAULT_RESPONSE_BUFFER
from .wsgi.gateway import serve_wsgi

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

# How long shutdown waits for the thread of a request the server has already
# cancelled: the server's graceful timeout has run out, so only a moment more.
CANCELLED_GRACE = 1.0


class Bridge:
    """An ASGI 3 application that serves ``wsgi_app`` from a bounded pool of threads.

    Arguments, each keyword-only, with its default and when to change it:

    * ``max_threads=32``: threads running the legacy app at once. Raise it for apps
      that mostly wait on I/O (a database, an HTTP API); each thread costs a stack.
    * ``adaptive_threads=True``: how many of ``max_threads`` run at once is decided from
      measured throughput and CPU load (``bridge.threads.sizing``), so CPU-bound views do not
      fight over the GIL. ``False`` lets all ``max_threads`` run at once.
    * ``max_pending=2048``: requests that may wait for a thread; the next gets 503
      with ``Retry-After``. Lower it to shed load sooner.
    * ``max_body_size=1 GiB``: larger request bodies get 413. ``None`` for no limit.
    * ``max_header_count=100``: header fields per request (gunicorn's default); 431 past it.
    * ``request_buffer_size=1 MiB``: a body up to this size is received before a thread
      is taken, so slow uploads do not hold threads; past it the body spools to a
      temporary file. Raise it to keep larger bodies in memory.
    * ``response_buffer_size=1 MiB``: a response up to this size is handed to the server
      whole, so slow downloads do not hold threads.
    * ``body_timeout=60``: seconds a request body may stall between two chunks before
      the request fails with 408 (nginx's ``client_body_timeout``). ``None``: no limit.
    * ``retry_after=1``: seconds in the ``Retry-After`` of a 503.
    * ``on_startup``, ``on_shutdown``: callables (sync or async) run on ASGI lifespan; one
      that takes an argument gets the lifespan state, a dict that views read as
      ``request.state`` and mounted apps share.
    * ``request_class=bridge.Request``: the werkzeug ``Request`` subclass views receive.
    * ``metrics=True``: count requests, latency and thread waits per route (cheap enough
      to leave on; see docs/metrics.md). ``False`` turns it off; a ``bridge.metrics.Metrics``
      sets the legacy grouping and the loop-blocking threshold.
    * ``metrics_path=None``: a path such as ``"/_bridge/metrics"`` to serve the counters
      in the Prometheus text format.
    * ``dashboard_path=None``: a path such as ``"/_bridge/"`` to serve the migration
      dashboard, to loopback clients only, or to anyone with ``dashboard_token``.
    * ``metrics_token=None``: a Bearer token the metrics path then asks of every client.
    * ``allowed_hosts=None``: the Host names bridge's own pages answer to (Django's
      ``ALLOWED_HOSTS``); ``None`` means loopback names only.
    * ``trusted_proxies=()``: proxies whose ``X-Forwarded-For`` the pages' loopback rule
      believes. Who gets in under each setting: SECURITY.md, "bridge's own pages".
    * ``max_shadows=4``: shadow runs (``route(..., shadow=True)``) at once; beyond it a
      request is answered by the legacy app alone, counted as skipped. See bridge.shadow.
    * ``broadcast=None``: live events, as ``app.broadcast``: a ``bridge.Broadcast`` or its
      URL. None takes ``$BRIDGE_BROADCAST_URL`` (set by ``bridge serve --broadcast``),
      else ``memory://``, which reaches only this process: give ``redis://`` for
      more than one worker.

    Requests go to the first of: a route registered with ``route()`` (path *and*
    method), a websocket route, an app mounted with ``mount()``, and the legacy app.
    ``max_header_count`` and ``max_body_size`` hold for mounted apps too.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        max_pending: int = DEFAULT_MAX_PENDING,
        adaptive_threads: bool = True,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        request_buffer_size: int = DEFAULT_REQUEST_BUFFER,
        response_buffer_size: int = DEFAULT_RESPONSE_BUFFER,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        retry_after: int = DEFAULT_RETRY_AFTER,
        on_startup: Sequence[Hook] = (),
        on_shutdown: Sequence[Hook] = (),
        request_class: type[Request] = Request,
        metrics: bool | Metrics = True,
        metrics_path: str | None = None,
        dashboard_path: str | None = None,
        dashboard_token: str | None = None,
        metrics_token: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
        trusted_proxies: Sequence[str] = (),
        max_shadows: int = DEFAULT_MAX_SHADOWS,
        broadcast: str | Broadcast | None = None,
    ) -> None:
        if not callable(wsgi_app):
            raise TypeError(
                f"Bridge() needs a WSGI application, a callable (environ, start_response); "
                f"got {wsgi_app!r}."
            )
        check_options(
            max_threads=max_threads,
            max_pending=max_pending,
            max_body_size=max_body_size,
            max_header_count=max_header_count,
            request_buffer_size=request_buffer_size,
            response_buffer_size=response_buffer_size,
            body_timeout=body_timeout,
            retry_after=retry_after,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
            request_class=request_class,
            metrics=metrics,
            metrics_path=metrics_path,
            dashboard_path=dashboard_path,
            dashboard_token=dashboard_token,
            metrics_token=metrics_token,
            allowed_hosts=allowed_hosts,
            trusted_proxies=trusted_proxies,
            max_shadows=max_shadows,
        )
        self.wsgi_app = wsgi_app
        self.pool = ThreadPool(max_threads, max_pending)
        if adaptive_threads:
            self.pool.gate = adaptive_gate(max_threads)
        # Requests holding or waiting for a thread, counted from their arrival.
        self.admission = Admission(max_threads + max_pending)
        self.limits = Limits(
            max_body_size=max_body_size,
            max_header_count=max_header_count,
            request_buffer_size=request_buffer_size,
            response_buffer_size=response_buffer_size,
            retry_after=retry_after,
            body_timeout=body_timeout,
        )
        # The lifespan state: the server's, once lifespan has started (see _lifespan).
        self.state: dict[str, Any] = {}
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.request_class = request_class
        self.router = Router()
        self.metrics: Metrics | None = None
        if metrics is not False:
            self.metrics = Metrics() if metrics is True else metrics
            self.metrics.bind(self.pool)
        meter = self.metrics
        self.shadows = Shadows(
            self.pool,
            max_shadows=max_shadows,
            lag=None if meter is None else (lambda: meter.loop_lag),
        )
        if meter is not None:
            meter.attach("shadow", self.shadows)
        access = AccessPolicy(
            dashboard_token=dashboard_token,
            metrics_token=metrics_token,
            allowed_hosts=allowed_hosts,
            trusted_proxies=trusted_proxies,
        )
        self._endpoints = Endpoints.configure(self.metrics, metrics_path, dashboard_path, access)
        self.metrics_path = metrics_path
        self.dashboard_path = dashboard_path
        self.broadcast = Broadcast.configured(broadcast)

    @property
    def max_threads(self) -> int:
        return self.pool.max_threads

    @property
    def routes(self) -> list[Route]:
        return list(self.router.routes)

    @property
    def websocket_routes(self) -> list[WebSocketRoute]:
        return list(self.router.websocket_routes)

    @property
    def mounts(self) -> list[Mount]:
        return list(self.router.mounts)

    # -- registration ---------------------------------------------------------------

    def route(
        self,
        rule: str,
        *,
        methods: Sequence[str] | None = None,
        middleware: Middleware | None = None,
        shadow: bool | float | Shadow = False,
    ) -> Callable[[View], View]:
        """Serve ``rule`` (a werkzeug rule) for ``methods`` with the decorated view.

        Other methods at the same path still go to the legacy app. With
        ``middleware`` (a function that wraps a WSGI app in the legacy middleware
        stack), the view runs inside that stack and sees what it puts in the environ.
        With ``shadow`` (True, a sampling rate, or a ``bridge.shadow.Shadow``), the
        legacy app still answers, and the view runs on the same requests afterwards,
        its response compared with the legacy one and discarded (docs/migration.md).
        """

        def register(view: View) -> View:
            self.add_route(rule, view, methods=methods, middleware=middleware, shadow=shadow)
            return view

        return register

    def add_route(
        self,
        rule: str,
        view: View,
        *,
        methods: Sequence[str] | None = None,
        middleware: Middleware | None = None,
        shadow: bool | float | Shadow = False,
    ) -> Route:
        config = Shadow.of(shadow)
        if config is not None:
            config.check_methods(rule, methods)
        route = self.router.add_route(rule, view, methods, middleware, config)
        if middleware is not None:
            route.wsgi = middleware(as_wsgi(view, self.request_class))
        if config is not None:
            self.shadows.add(route)
        return route

    def websocket(self, rule: str) -> Callable[[View], View]:
        """Serve websocket connections to ``rule`` with the decorated ``async def view(ws)``."""

        def register(view: View) -> View:
            self.router.add_websocket(rule, view)
            return view

        return register

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Serve every request under ``prefix`` (HTTP and websocket) with an ASGI app."""
        self.router.add_mount(prefix, app)

    # -- dispatch -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._endpoints is not None and await self._endpoints.answer(scope, receive, send):
                return  # bridge's own metrics or dashboard page
            router = self.router
            meter = self.metrics
            if router.active:
                path = route_path(scope)
                found = router.match_http(path, scope["method"])
                if found is not None:
                    if found[0].shadow is not None:  # the legacy app answers, the view shadows
                        await self.shadows.serve(
                            *found, scope, receive, send, self._legacy, self._serve_route
                        )
                        return
                    serving = self._serve_route(found[0], found[1], scope, receive, send)
                    await (serving if meter is None else meter.route(found[0], serving))
                    return
                mount = router.match_mount(path)
                if mount is not None:
                    child = _mounted_scope(scope, mount.prefix, path, self.state)
                    limited = Mount(mount.prefix, within_limits(mount.app, self.limits))
                    if meter is None:
                        await limited.app(child, receive, send)
                    else:
                        await meter.mount(limited, child, receive, send)
                    return
            cycle = RequestCycle(scope, receive, send, self.limits)
            legacy = serve_wsgi(cycle, self.wsgi_app, self.pool, self.admission)
            await (legacy if meter is None else meter.legacy(scope, legacy))
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            raise ValueError(f"bridge cannot serve ASGI scopes of type {kind!r}.")

    async def _legacy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve and count one request with the legacy app (a shadow route's answer)."""
        cycle = RequestCycle(scope, receive, send, self.limits)
        legacy = serve_wsgi(cycle, self.wsgi_app, self.pool, self.admission)
        meter = self.metrics
        await (legacy if meter is None else meter.legacy(scope, legacy))

    async def _serve_route(
        self, route: Route, values: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> Outcome:
        cycle = RequestCycle(scope, receive, send, self.limits)
        if route.wsgi is not None:
            extra = {"bridge.path_params": values}
            return await serve_wsgi(cycle, route.wsgi, self.pool, self.admission, extra)
        return await serve_view(cycle, route, values, self.pool, self.admission, self.request_class)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        found = self.router.match_websocket(path)
        if found is None:
            mount = self.router.match_mount(path)
            if mount is not None:
                child = _mounted_scope(scope, mount.prefix, path, self.state)
                await within_limits(mount.app, self.limits)(child, receive, send)
                return
            # No websocket here, and a WSGI app cannot speak it: refuse the handshake
            # (the server answers 403).
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000})
            return
        route, values = found
        serving = self._serve_websocket(route, values, scope, receive, send)
        # Counted as a "websocket" route of its own: one request per connection.
        await (serving if self.metrics is None else self.metrics.websocket(route.rule, serving))

    async def _serve_websocket(
        self, route: WebSocketRoute, values: dict[str, Any], scope: Scope, receive: Receive,
        send: Send,
    ) -> Outcome:  # fmt: skip
        """Run the view; the outcome's status is 101 (switched protocols), or 431 or 500
        if the handshake was refused or the view raised."""
        limit = self.limits.max_header_count
        if len(scope["headers"]) > limit:  # build_environ's test, before the environ is built
            logger.info(
                "Refused a websocket handshake: %d header fields; the limit is %d.",
                len(scope["headers"]),
                limit,
            )
            await refuse_handshake(scope, receive, send, 431, "Request Header Fields Too Large\n")
            return Outcome(431)

        def handshake() -> Request:
            # Built when the view first reads socket.request; most idle sockets never do.
            environ = build_environ(
                {**scope, "method": "GET"}, RequestBody(), max_header_count=limit
            )
            request = self.request_class(environ)
            request.path_params = values
            return request

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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI lifespan: "state" is a namespace the server copies into every request's
        # scope. A server that offers none gets bridge's own dict, which mounted apps
        # then receive in their request scopes from bridge (see _mounted_scope).
        if scope.get("state") is not None:
            self.state = scope["state"]
        state = self.state
        mounted = [MountedLifespan(m.prefix, m.app) for m in self.router.mounts]
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                refusal = unsupported_event_loop()
                if refusal is not None:
                    logger.error("%s", refusal)
                    await send({"type": "lifespan.startup.failed", "message": refusal})
                    return
                try:
                    for hook in self.on_startup:
                        await _call_hook(hook, state)
                    for app in mounted:
                        await app.startup(state)
                except Exception as exc:
                    logger.exception("A startup hook failed.")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                if self.metrics is not None:
                    self.metrics.start()  # the loop-lag probe
                await self.broadcast.start()  # never fails: Redis is retried in the background
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.broadcast.stop()  # ends the live streams, so the drain is short
                await self._drain()
                await self.shadows.stop()
                if self.metrics is not None:
                    await self.metrics.stop()
                for app in reversed(mounted):
                    await app.shutdown()
                try:
                    for hook in self.on_shutdown:
                        await _call_hook(hook, state)
                except Exception as exc:
                    logger.exception("A shutdown hook failed.")
                    self.pool.shutdown()
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                self.pool.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _drain(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Wait for requests still in threads to finish, up to ``timeout`` seconds.

        A request the server cancelled (past its own graceful timeout) no longer counts
        as in flight, but its thread may still be in the app. Its thread gets at most
        ``CANCELLED_GRACE`` more, so that a short overrun ends before the shutdown hooks
        run, while the server's graceful timeout still bounds the whole shutdown.
        """
        pool = self.pool
        admission = self.admission
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while admission.admitted and loop.time() < deadline:
            await asyncio.sleep(0.01)
        deadline = min(deadline, loop.time() + CANCELLED_GRACE)
        while pool.running and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if admission.admitted or pool.running:
            logger.warning(
                "%d requests were still running in threads at shutdown; they are abandoned.",
                max(admission.admitted, pool.running),
            )


def _mounted_scope(
    scope: Scope, prefix: str, path: str, state: dict[str, Any] | None = None
) -> Scope:
    """The scope a mounted app sees: ``root_path`` grows by the prefix, and ``path``
    includes ``root_path``, as the ASGI spec asks (Starlette reads it that way).

    ``path`` is ``route_path(scope)``, so the mounted app (a nested ``Bridge`` too)
    sees what the legacy app would have seen below the prefix. ``raw_path`` stays
    the bytes the client sent: the mounted app uses it only where it agrees with
    ``path`` (see ``bridge.wsgi.environ.request_path``). ``state`` is bridge's own lifespan
    state, for a server that keeps none (ASGI: "the server will copy it").
    """
    root_path = scope.get("root_path", "").rstrip("/") + prefix
    child = dict(scope)
    child["root_path"] = root_path
    child["path"] = root_path + path[len(prefix) :]
    if state is not None and "state" not in scope:
        child["state"] = dict(state)
    return child


async def _call_hook(hook: Hook, state: dict[str, Any]) -> None:
    """Run a lifespan hook; one that takes an argument receives the lifespan state."""
    args = (state,) if _takes_argument(hook) else ()
    if inspect.iscoroutinefunction(hook):
        await hook(*args)
        return
    result = await sync_to_async(hook)(*args)
    if isinstance(result, Awaitable):
        await result


def _takes_argument(hook: Hook) -> bool:
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        and p.default is p.empty
        for p in parameters
    )
