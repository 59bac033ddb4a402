"""``Bridge``: the ASGI application that serves a legacy WSGI app, and new async code beside it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from ._types import ASGIApp, Receive, Scope, Send, WSGIApp
from .broadcast.hub import Broadcast
from .canary.config import Canary
from .canary.control import CanaryControl
from .canary.runner import Canaries
from .lifespan import Hook, Lifespan
from .metrics.registry import Metrics
from .mounts import guarded, mounted_scope, serve_mount
from .observe import Seam, routed
from .options import check_options
from .pages.access import AccessPolicy
from .pages.dashboard import Endpoints
from .requests import Request
from .routing import Middleware, Mount, Route, Router, View, WebSocketRoute
from .shadow.config import Shadow
from .shadow.runner import DEFAULT_MAX_SHADOWS, Replayed, Shadows
from .threads.admission import DEFAULT_MAX_UPLOAD_MEMORY, DEFAULT_MAX_UPLOADS, Admission, Intake
from .threads.pool import DEFAULT_MAX_PENDING, DEFAULT_MAX_THREADS, ThreadPool
from .threads.sizing import adaptive_gate
from .views import as_wsgi, no_websocket, serve_view, serve_websocket
from .wsgi.body import DEFAULT_REQUEST_BUFFER
from .wsgi.cycle import (
    DEFAULT_BODY_DEADLINE,
    DEFAULT_BODY_TIMEOUT,
    CycleLimits,
    Outcome,
    RequestCycle,
)
from .wsgi.environ import DEFAULT_MAX_HEADER_COUNT, RequestPath, locate
from .wsgi.framing import DEFAULT_RESPONSE_BUFFER
from .wsgi.gateway import serve_wsgi

logger = logging.getLogger("bridge")

# The largest request body accepted by default. gunicorn sets no limit and nginx
# 1 MiB (client_max_body_size); 1 GiB lets existing upload forms keep working
# while still refusing an endless body. Set None for no limit.
DEFAULT_MAX_BODY_SIZE = 1024 * 1024 * 1024

# Seconds a client is told to wait after a 503 (RFC 9110 10.2.3).
DEFAULT_RETRY_AFTER = 1


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
    * ``body_deadline=300``: seconds the whole body may take to arrive, however steadily
      it trickles (Node.js's ``requestTimeout``); 408 past it. Raise it for large uploads
      over slow links. ``None``: no limit.
    * ``max_uploads=1000``: request bodies that may be arriving at once, each costing a
      coroutine and no thread until its buffered part is in (gunicorn's
      ``--worker-connections``); the next gets 503.
    * ``max_upload_memory=256 MiB``: bytes those bodies may buffer between them, each
      reserving what it declares up to ``request_buffer_size``; the next gets 503.
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
    * ``trusted_proxies=()``: proxies whose forwarded address the pages' loopback rule
      believes, each with the header it sets (``{"10.0.0.2": "x-real-ip"}``; a list of
      addresses means ``X-Forwarded-For``). Who gets in: SECURITY.md, "bridge's own pages".
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
        body_deadline: float | None = DEFAULT_BODY_DEADLINE,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
        max_upload_memory: int = DEFAULT_MAX_UPLOAD_MEMORY,
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
        trusted_proxies: Sequence[str] | Mapping[str, str] = (),
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
            body_deadline=body_deadline,
            max_uploads=max_uploads,
            max_upload_memory=max_upload_memory,
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
        # Requests holding or waiting for a thread, counted once their buffered body is
        # in; before that, bodies arriving count against the intake.
        self.admission = Admission(
            max_threads + max_pending, Intake(max_uploads, max_upload_memory)
        )
        self.limits = CycleLimits(
            max_body_size=max_body_size,
            max_header_count=max_header_count,
            request_buffer_size=request_buffer_size,
            response_buffer_size=response_buffer_size,
            retry_after=retry_after,
            body_timeout=body_timeout,
            body_deadline=body_deadline,
        )
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
            legacy=self._legacy,
            view=self._serve_route,
            max_shadows=max_shadows,
            lag=None if meter is None else (lambda: meter.loop_lag),
            wsgi_app=wsgi_app,
        )
        if meter is not None:
            meter.attach("shadow", self.shadows)
        self._seam = Seam.legacy(wsgi_app, meter)  # the legacy app, seen by tracing tools
        shared = None if meter is None or meter.shared is None else meter.shared.directory
        self.canaries = Canaries(
            request_buffer_size, legacy=self._legacy, view=self._route, directory=shared
        )
        if meter is not None:
            meter.attach("canary", self.canaries)
        access = AccessPolicy(
            dashboard_token=dashboard_token,
            metrics_token=metrics_token,
            allowed_hosts=allowed_hosts,
            trusted_proxies=trusted_proxies,
        )
        self._endpoints = Endpoints.configure(
            self.metrics, metrics_path, dashboard_path, access, self.canaries, self.shadows.report
        )
        self.metrics_path = metrics_path
        self.dashboard_path = dashboard_path
        self.broadcast = Broadcast.configured(broadcast)
        self.lifespan = Lifespan(
            self.pool,
            self.admission,
            self.on_startup,
            self.on_shutdown,
            mounts=lambda: [(m.prefix, m.app) for m in self.router.mounts],
            start=self._start_services,
            stop_streams=self._stop_streams,
            stop=self._stop_services,
        )

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state: the server's once lifespan has started, else bridge's own."""
        return self.lifespan.state

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

    # -- bridge's own services, started and stopped by the lifespan ------------------

    async def _start_services(self) -> None:
        if self.metrics is not None:
            self.metrics.start()  # the loop-lag probe
        await self.broadcast.start()  # never fails: Redis is retried in the background
        await self.canaries.start(self.broadcast)  # follows the control channel

    async def _stop_streams(self) -> None:
        await self.canaries.stop()
        await self.broadcast.stop()  # ends the live streams, so the drain is short

    async def _stop_services(self) -> None:
        await self.shadows.stop()
        if self.metrics is not None:
            await self.metrics.stop()

    # -- registration ---------------------------------------------------------------

    def route(
        self,
        rule: str,
        *,
        methods: Sequence[str] | None = None,
        middleware: Middleware | None = None,
        shadow: bool | float | Shadow = False,
        canary: float | Canary | None = None,
    ) -> Callable[[View], View]:
        """Serve ``rule`` (a werkzeug rule) for ``methods`` with the decorated view.

        Other methods at the same path still go to the legacy app. With
        ``middleware`` (a function that wraps a WSGI app in the legacy middleware
        stack), the view runs inside that stack and sees what it puts in the environ.
        With ``shadow`` (True, a sampling rate, or a ``bridge.shadow.Shadow``), the
        legacy app still answers, and the view runs on the same requests afterwards,
        its response compared with the legacy one and discarded (docs/migration.md).
        With ``canary`` (a share such as 0.05, or a ``bridge.Canary``), the view answers
        that share of the requests and the legacy app the rest; ``app.canary(rule)``
        changes the share while the app runs.
        """

        def register(view: View) -> View:
            self.add_route(
                rule, view, methods=methods, middleware=middleware, shadow=shadow, canary=canary
            )
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
        canary: float | Canary | None = None,
    ) -> Route:
        config = Shadow.of(shadow)
        if config is not None:
            config.check_methods(rule, methods)
        split = Canary.of(canary)
        if split is not None and config is not None:
            raise ValueError(
                f'The route "{rule}" has both shadow= and canary=: shadow it first, then '
                "register it with canary= alone once the comparison says it is ready."
            )
        route = self.router.add_route(rule, view, methods, middleware, config)
        if split is not None:
            self.canaries.add(route, split)
            route.canary = True
        if middleware is not None:
            route.wsgi = Seam(middleware(as_wsgi(view, self.request_class)), None)
        if config is not None:
            self.shadows.add(route)
        return route

    def canary(self, rule: str) -> CanaryControl:
        """The live control of the canary route ``rule``: its ``share`` and ``state``, and
        ``set(share)``, ``rollback()`` and ``promote()`` (every worker, with ``redis://``)."""
        return self.canaries.control(rule)

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
        """Serve one ASGI scope. An HTTP request goes to the first row that claims it,
        its path derived once (``locate``) and handed on:

        =========================  ===================================  ================
        the request                served by                            counted as
        =========================  ===================================  ================
        bridge's own page          ``pages.dashboard.Endpoints``        not counted
        a shadowed route           the legacy app, then ``Shadows``     its legacy group
        a canary route             ``Canaries``: the view or legacy     the arm's row
        a route                    ``views.serve_view`` or the gateway  the route
        under a mount              ``mounts.serve_mount``               the mount
        anything else              ``wsgi.gateway.serve_wsgi``          its legacy group
        =========================  ===================================  ================
        """
        kind = scope["type"]
        if kind == "http":
            path = locate(scope)
            pages = self._endpoints
            if pages is not None and await pages.answer(path.route, scope, receive, send):
                return
            router = self.router
            if router.active:
                found = router.match_http(path.route, scope["method"])
                if found is not None:
                    routed(scope, found[0])  # the rule, for tracing middleware around bridge
                if found is not None and found[0].shadow is not None:
                    await self.shadows.serve(*found, path, scope, receive, send)
                    return
                if found is not None and found[0].canary:
                    await self.canaries.serve(*found, path, scope, receive, send)
                    return
                if found is not None:
                    serving = self._route(*found, path, scope, receive, send)
                    del found, path  # what serves keeps what it needs; a long stream no more
                    await serving
                    return
                mount = router.match_mount(path.route)
                if mount is not None:
                    await self._mount(mount, path, scope, receive, send)
                    return
            # self._legacy, inline: the hot path of a migration saves a coroutine frame.
            cycle = RequestCycle(scope, receive, send, self.limits, path)
            serving = serve_wsgi(cycle, self._seam, self.pool, self.admission)
            meter = self.metrics
            if meter is None:
                await serving
            else:
                await meter.measure(meter.legacy_for(path.route), serving)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan.serve(scope, receive, send)
        else:
            raise ValueError(f"bridge cannot serve ASGI scopes of type {kind!r}.")

    async def replay(
        self,
        scope: Scope,
        body: bytes,
        headers: tuple[str, ...] = ("content-type",),
        noise: tuple[str, ...] = (),
    ) -> Replayed | None:
        """Answer one request with the legacy app and with the route's view, and compare
        them (``bridge replay``); None when no route matches the request."""
        path = locate(scope)
        found = self.router.match_http(path.route, scope["method"])
        if found is None:
            return None
        return await self.shadows.replay(*found, path, scope, body, headers, noise)

    async def _legacy(self, path: RequestPath, scope: Scope, receive: Receive, send: Send) -> None:
        """The legacy app answers (a shadowed route's answer too), counted by its group."""
        cycle = RequestCycle(scope, receive, send, self.limits, path)
        serving = serve_wsgi(cycle, self._seam, self.pool, self.admission)
        meter = self.metrics
        await (serving if meter is None else meter.measure(meter.legacy_for(path.route), serving))

    # _route and _serve_route return the coroutine that serves rather than await it: no
    # frame of theirs stays suspended beside a long response (an open SSE stream).

    def _route(
        self, route: Route, values: dict[str, Any], path: RequestPath, scope: Scope,
        receive: Receive, send: Send,
    ) -> Awaitable[object]:  # fmt: skip
        serving = self._serve_route(route, values, path, scope, receive, send)
        meter = self.metrics
        if meter is None:
            return serving
        on_loop = route.is_async and route.wsgi is None
        return meter.measure(meter.route_stats(route), serving, on_loop)

    def _serve_route(
        self, route: Route, values: dict[str, Any], path: RequestPath, scope: Scope,
        receive: Receive, send: Send,
    ) -> Coroutine[Any, Any, Outcome]:  # fmt: skip
        """A route's view answers (a shadow run's view too)."""
        cycle = RequestCycle(scope, receive, send, self.limits, path)
        if route.wsgi is not None:
            extra = {"bridge.path_params": values}
            return serve_wsgi(cycle, route.wsgi, self.pool, self.admission, extra)
        return serve_view(cycle, route, values, self.pool, self.admission, self.request_class)

    async def _mount(
        self, mount: Mount, path: RequestPath, scope: Scope, receive: Receive, send: Send
    ) -> None:
        child = mounted_scope(scope, mount.prefix, path.route, self.state)
        app = guarded(mount.app, self.limits)
        meter = self.metrics
        if meter is None:
            await app(child, receive, send)
            return
        serving = serve_mount(app, child, receive, send)
        await meter.measure(meter.stats(mount.prefix, "mount"), serving, on_loop=True)

    def _websocket(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[object]:
        # Returns the coroutine that serves, as _route does: an idle socket keeps no
        # frame of this one.
        path = locate(scope)
        found = self.router.match_websocket(path.route)
        if found is None:
            mount = self.router.match_mount(path.route)
            if mount is not None:
                child = mounted_scope(scope, mount.prefix, path.route, self.state)
                return guarded(mount.app, self.limits)(child, receive, send)
            return no_websocket(receive, send)
        route, values = found
        serving = serve_websocket(
            route, values, path, scope, receive, send, self.limits, self.request_class
        )
        # Counted as a "websocket" route of its own: one request per connection.
        meter = self.metrics
        if meter is None:
            return serving
        return meter.measure(meter.stats(route.rule, "websocket"), serving, long_lived=True)
