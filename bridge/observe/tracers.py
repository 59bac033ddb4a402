"""The tracing libraries a request may be observed by, reached through ``sys.modules``.

bridge never imports OpenTelemetry or Sentry: when a library is not loaded, nothing
here runs, and a request pays one dictionary lookup per library.
"""

from __future__ import annotations

import sys
from typing import Any

from .._types import Environ

# What a framework integration reads to continue a trace: OpenTelemetry's WSGI
# middleware (Flask, Django) reads the W3C headers through its propagators; Sentry's
# WSGI middleware reads sentry-trace and baggage.
_HEADERS = {
    "traceparent": "HTTP_TRACEPARENT",
    "tracestate": "HTTP_TRACESTATE",
    "baggage": "HTTP_BAGGAGE",
}


def sentry_active() -> bool:
    """True when Sentry's SDK is loaded and a transaction or span is active (its ASGI
    middleware's, around bridge)."""
    sentry = sys.modules.get("sentry_sdk")
    return sentry is not None and sentry.get_current_span() is not None


def server_span() -> Any:
    """The active OpenTelemetry server span (the ASGI middleware's), or None."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span = trace.get_current_span()
    # Only the server span is renamed: a span some other code started around bridge
    # keeps its own name.
    if getattr(span, "kind", None) is not trace.SpanKind.SERVER or not span.is_recording():
        return None
    return span


def name_span(span: Any, method: str, route: str, is_rule: bool) -> None:
    """Name the server span ``"GET /items/<int:item_id>"``, as OpenTelemetry's HTTP
    conventions ask ("{method} {http.route}"); a path group names it but is no route."""
    span.update_name(f"{method} {route}")
    if is_rule:
        span.set_attribute("http.route", route)


def carry(environ: Environ, sentry_on: bool) -> None:
    """Write the active trace into ``environ`` as the headers a framework integration
    continues from, and let Sentry's WSGI middleware join the outer transaction.

    Runs in the thread, in the request's own copy of the context.
    """
    carrier: dict[str, str] = {}
    propagate = sys.modules.get("opentelemetry.propagate")
    trace = sys.modules.get("opentelemetry.trace")
    if (
        propagate is not None
        and trace is not None
        and trace.get_current_span().get_span_context().is_valid
    ):
        propagate.inject(carrier)
    sentry = sys.modules.get("sentry_sdk")
    if sentry_on and sentry is not None:
        traceparent = sentry.get_traceparent()
        if traceparent:
            environ["HTTP_SENTRY_TRACE"] = traceparent
        baggage = sentry.get_baggage()
        if baggage:
            carrier["baggage"] = ",".join(filter(None, (carrier.get("baggage"), baggage)))
        _join_sentry_transaction()
        _quiet_error_stream()
    for header, value in carrier.items():
        key = _HEADERS.get(header.lower())
        if key is not None:
            environ[key] = value


def _join_sentry_transaction() -> None:
    """Tell Sentry's WSGI middleware that the request is already inside one, as its own
    nesting guard does: it then starts no second transaction, and the framework
    integration names and reports into the ASGI middleware's transaction.

    ``_wsgi_middleware_applied`` is that guard, a private context variable of
    ``sentry_sdk.integrations.wsgi`` (tests/observe pin its effect); set in the thread's
    copy of the context, it ends with the call. Were it renamed, the headers above would
    still put the framework's transaction in the same trace.
    """
    wsgi = sys.modules.get("sentry_sdk.integrations.wsgi")
    applied = getattr(wsgi, "_wsgi_middleware_applied", None)
    if applied is not None:
        applied.set(True)


def _quiet_error_stream() -> None:
    """Keep the app's ``wsgi.errors`` lines (the ``bridge.wsgi`` logger) out of Sentry's
    events: a framework writes its traceback there as text after its integration has
    reported the exception itself, and the text would be a second event for one error.
    They stay in the server's log."""
    logging_integration = sys.modules.get("sentry_sdk.integrations.logging")
    ignore = getattr(logging_integration, "ignore_logger", None)
    if ignore is not None and not _QUIETED:
        ignore("bridge.wsgi")
        _QUIETED.append(True)


_QUIETED: list[bool] = []  # ignore_logger once per process
