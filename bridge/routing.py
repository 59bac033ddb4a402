"""Which code answers a request: an async route, a mounted ASGI app, or the legacy app.

Routes are werkzeug ``Rule``s in a ``Map``, so rule syntax, converters and the
"most specific rule wins" ordering are werkzeug's. Matching must cost next to
nothing on the legacy path, which serves most requests while a migration is under
way: before werkzeug is asked, the path is checked against the literal prefix of
every rule (the text before its first ``<``) with one ``str.startswith(tuple)``,
and a request that no prefix admits goes straight to the legacy app.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from ._types import ASGIApp, WSGIApp

if TYPE_CHECKING:
    from .shadow.config import Shadow

View = Callable[..., Any]
Middleware = Callable[[WSGIApp], WSGIApp]


@dataclass
class Route:
    """One migrated endpoint: a rule, the methods it takes, and the view that answers."""

    rule: str
    methods: frozenset[str] | None  # None: every method
    view: View
    endpoint: str
    is_async: bool
    middleware: Middleware | None = None
    wsgi: WSGIApp | None = field(default=None, repr=False)  # the view inside the middleware
    shadow: Shadow | None = None  # set: the legacy app answers, the view runs in its shadow
    canary: bool = False  # a share of its requests goes to the view (bridge.canary holds how)

    @property
    def kind(self) -> str:
        if self.middleware is not None:
            return (
                "async view in legacy middleware" if self.is_async else "view in legacy middleware"
            )
        return "async view" if self.is_async else "sync view (thread)"


@dataclass
class WebSocketRoute:
    rule: str
    view: View
    endpoint: str


@dataclass
class Mount:
    prefix: str
    app: ASGIApp


def literal_prefix(rule: str) -> str:
    """The part of a rule before its first variable: ``/items/<int:id>`` gives ``/items/``."""
    return rule.split("<", 1)[0]


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    upper = frozenset(m.upper() for m in methods)
    if "GET" in upper:
        upper |= {"HEAD"}  # as werkzeug and Flask do
    return upper


class Router:
    """The route table of one ``Bridge``: HTTP routes, websocket routes, and mounts."""

    def __init__(self) -> None:
        # strict_slashes stays on, and a redirect it would cause counts as no match:
        # "/items" when only "/items/" is migrated belongs to the legacy app.
        self._http = Map(strict_slashes=True, redirect_defaults=False)
        self._websocket = Map(strict_slashes=True, redirect_defaults=False)
        self.routes: list[Route] = []
        self.websocket_routes: list[WebSocketRoute] = []
        self.mounts: list[Mount] = []
        self._by_endpoint: dict[str, Route | WebSocketRoute] = {}
        self._http_prefixes: tuple[str, ...] = ()
        self._websocket_prefixes: tuple[str, ...] = ()
        self.active = False  # any route or mount at all; False keeps the legacy path bare

    # -- registration ---------------------------------------------------------------

    def add_route(
        self,
        rule: str,
        view: View,
        methods: Iterable[str] | None = None,
        middleware: Middleware | None = None,
        shadow: Shadow | None = None,
    ) -> Route:
        if not rule.startswith("/"):
            raise ValueError(f'The route rule "{rule}" must start with "/".')
        if not callable(view):
            raise TypeError(f'The view for "{rule}" must be a function, not {view!r}.')
        wanted = _methods(methods)
        for existing in self.routes:
            if existing.rule == rule and (
                wanted is None or existing.methods is None or wanted & existing.methods
            ):
                if wanted is None and existing.methods is None:
                    overlap = "for every method"
                else:
                    both = (wanted or existing.methods or frozenset()) & (
                        existing.methods or wanted or frozenset()
                    )
                    overlap = "for " + ", ".join(sorted(both))
                raise ValueError(
                    f'The route "{rule}" {overlap} is already served by '
                    f"{existing.view.__qualname__}; give {view.__qualname__} other methods "
                    "or another rule."
                )
        endpoint = f"route-{len(self._by_endpoint)}"
        route = Route(
            rule=rule,
            methods=wanted,
            view=view,
            endpoint=endpoint,
            is_async=inspect.iscoroutinefunction(view),
            middleware=middleware,
            shadow=shadow,
        )
        self._http.add(Rule(rule, endpoint=endpoint, methods=wanted))
        self.routes.append(route)
        self._by_endpoint[endpoint] = route
        self._http_prefixes = (*self._http_prefixes, literal_prefix(rule))
        self.active = True
        return route

    def add_websocket(self, rule: str, view: View) -> WebSocketRoute:
        if not rule.startswith("/"):
            raise ValueError(f'The websocket rule "{rule}" must start with "/".')
        if not inspect.iscoroutinefunction(view):
            raise TypeError(
                f'The websocket view for "{rule}" must be an async def function; '
                f"{view.__qualname__} is not."
            )
        for existing in self.websocket_routes:
            if existing.rule == rule:
                raise ValueError(
                    f'The websocket route "{rule}" is already served by '
                    f"{existing.view.__qualname__}."
                )
        endpoint = f"websocket-{len(self._by_endpoint)}"
        route = WebSocketRoute(rule=rule, view=view, endpoint=endpoint)
        self._websocket.add(Rule(rule, endpoint=endpoint))
        self.websocket_routes.append(route)
        self._by_endpoint[endpoint] = route
        self._websocket_prefixes = (*self._websocket_prefixes, literal_prefix(rule))
        self.active = True
        return route

    def add_mount(self, prefix: str, app: ASGIApp) -> Mount:
        if not prefix.startswith("/") or prefix == "/":
            raise ValueError(
                f'The mount prefix "{prefix}" must start with "/" and name a path, such as "/v2".'
            )
        if not callable(app):
            raise TypeError(f'The app mounted at "{prefix}" must be an ASGI app, not {app!r}.')
        prefix = prefix.rstrip("/")
        if any(m.prefix == prefix for m in self.mounts):
            raise ValueError(f'An app is already mounted at "{prefix}".')
        mount = Mount(prefix, app)
        # Longest prefix first, so "/v2/admin" wins over "/v2".
        self.mounts = sorted([*self.mounts, mount], key=lambda m: len(m.prefix), reverse=True)
        self.active = True
        return mount

    # -- matching -------------------------------------------------------------------

    def match_http(self, path: str, method: str) -> tuple[Route, dict[str, Any]] | None:
        """The route for ``method`` at ``path``, or None (another method falls through)."""
        if not path.startswith(self._http_prefixes):
            return None
        try:
            endpoint, values = self._http.bind("").match(path, method)
        except (NotFound, MethodNotAllowed, RequestRedirect):
            return None
        route = self._by_endpoint[endpoint]
        assert isinstance(route, Route)
        return route, dict(values)

    def match_websocket(self, path: str) -> tuple[WebSocketRoute, dict[str, Any]] | None:
        if not path.startswith(self._websocket_prefixes):
            return None
        try:
            endpoint, values = self._websocket.bind("").match(path, "GET")
        except (NotFound, MethodNotAllowed, RequestRedirect):
            return None
        route = self._by_endpoint[endpoint]
        assert isinstance(route, WebSocketRoute)
        return route, dict(values)

    def match_mount(self, path: str) -> Mount | None:
        for mount in self.mounts:
            prefix = mount.prefix
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return mount
        return None
