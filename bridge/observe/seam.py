"""``Seam``: the legacy WSGI app as bridge calls it, with the trace carried across.

In the worker thread, in the request's own copy of the context: before the call, the
active trace goes into the environ (``tracers.carry``), so a framework integration
continues it instead of starting a trace of its own; after it, the rule the framework
matched names the server span and goes into the ASGI scope (``route.py``). With no
server span or transaction active it only calls the app; with no tracing library
loaded, that decision costs two dictionary lookups.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from .._types import Environ, WSGIApp
from ..metrics.registry import Metrics, first_segment
from ..wsgi.environ import route_path
from .route import learned, scope_route
from .tracers import carry, name_span, sentry_active, server_span


class Seam:
    """Call ``app`` for bridge; ``group`` names the server span of a request whose
    framework names no rule (bridge's path group, ``Metrics.legacy_group``); None leaves
    such a request's span as the tracer named it."""

    __slots__ = ("app", "group")

    def __init__(self, app: WSGIApp, group: Callable[[str], str] | None) -> None:
        self.app = app
        self.group = group

    @classmethod
    def legacy(cls, app: WSGIApp, metrics: Metrics | None) -> Seam:
        """The seam for the legacy app: unnamed requests take their metrics group."""
        return cls(app, first_segment if metrics is None else metrics.legacy_group)

    def __call__(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        modules = sys.modules
        if "opentelemetry.trace" not in modules and "sentry_sdk" not in modules:
            return self.app(environ, start_response)  # the usual case, kept to two lookups
        span = server_span()  # taken before the framework starts spans of its own
        sentry_on = sentry_active()
        if span is None and not sentry_on:
            return self.app(environ, start_response)
        carry(environ, sentry_on)
        found: list[str] = []

        def starting(*args: Any) -> Any:
            # Flask forgets its request (environ["werkzeug.request"]) before its call
            # returns, but still has it while it starts the response.
            rule = learned(environ)
            if rule is not None:
                found.append(rule)
            return start_response(*args)

        result = self.app(environ, starting)
        rule = learned(environ) or (found[-1] if found else None)
        scope = environ["asgi.scope"]
        root = scope.get("root_path", "")
        if rule is not None:
            # Read by the middleware around bridge once the response is done, after
            # this call has returned to the loop.
            scope["route"] = scope_route(rule)
            if span is not None:
                name_span(span, environ["REQUEST_METHOD"], root + rule, True)
        elif span is not None and self.group is not None:
            # A group names the span only: in the scope it would become a metric label
            # (OpenTelemetry's http.target) that any client could multiply with paths.
            name_span(span, environ["REQUEST_METHOD"], root + self.group(route_path(scope)), False)
        return result
