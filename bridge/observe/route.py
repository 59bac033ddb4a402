"""The route of a request, written into the ASGI scope where tracing middleware reads it.

What the middleware around ``Bridge`` read (docs/observability.md has the detail):

* OpenTelemetry's ASGI middleware names its server span ``"{method} {path}"`` when the
  request arrives and reads nothing else to name it; at the end it reads
  ``scope["route"].path_format`` (FastAPI's route object) for the ``http.target`` of
  its duration metric. bridge renames the span itself (``tracers.name_span``).
* Sentry's ASGI middleware names its transaction, when it finishes, from
  ``scope["endpoint"]`` (a function: ``module.qualname``) under its default
  ``transaction_style="endpoint"``, or ``scope["route"].path`` under ``"url"``, as
  Starlette and FastAPI set them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .._types import Environ, Scope
from .tracers import name_span, server_span

if TYPE_CHECKING:
    from ..routing import Route

# The environ key a legacy app (or ``RouteMiddleware``) sets to the rule it matched,
# such as "/items/<int:item_id>"; bridge reads it after the WSGI call.
ROUTE_KEY = "bridge.route"


@dataclass(frozen=True)
class ScopeRoute:
    """The matched rule, in the shape of a Starlette route as tracing middleware reads it."""

    path: str  # Sentry's transaction_style="url"
    path_format: str  # OpenTelemetry's http.target (FastAPI's name for the same)


@lru_cache(maxsize=512)  # rules are few; a legacy app that sets ROUTE_KEY freely is bounded
def scope_route(rule: str) -> ScopeRoute:
    return ScopeRoute(rule, rule)


def routed(scope: Scope, route: Route) -> None:
    """Write a migrated, shadow or canary route's rule into ``scope``, and name the
    server span by it; on the loop, when the route has matched."""
    scope["route"] = scope_route(route.rule)
    if route.shadow is None:  # the view answers: it is the endpoint
        scope["endpoint"] = route.view
    span = server_span()
    if span is not None:
        name_span(span, scope["method"], scope.get("root_path", "") + route.rule, True)


def learned(environ: Environ) -> str | None:
    """The rule the legacy framework matched, read from the environ without importing it:
    ``bridge.route`` if the app set it, else Flask's (werkzeug's) ``url_rule``."""
    rule = environ.get(ROUTE_KEY)
    if isinstance(rule, str):
        return rule
    # werkzeug's Request files itself in the environ; Flask's Request adds url_rule.
    url_rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    rule = getattr(url_rule, "rule", None)
    return rule if isinstance(rule, str) else None


class RouteMiddleware:
    """Django middleware that tells bridge the URL pattern a request matched.

    Add ``"bridge.observe.RouteMiddleware"`` to ``MIDDLEWARE``: the request's
    ``resolver_match.route`` (``"items/<int:item_id>"``) then names its trace.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if isinstance(route, str) and route:
            request.environ[ROUTE_KEY] = route if route.startswith("/") else "/" + route
        return response
