"""The app the live tracing tests serve: ``TRACED_FRAMEWORK`` (flask, django) behind
``Bridge``, inside ``TRACED_WITH``'s ASGI middleware (opentelemetry, sentry), each
framework integration left on. What the tracer recorded, kept in memory in the worker,
is read back as JSON from ``/_seen``, which no tracer sees.
"""

from __future__ import annotations

import json
import os
from typing import Any

from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge._types import ASGIApp, Receive, Scope, Send

FRAMEWORK = os.environ.get("TRACED_FRAMEWORK", "flask")
TRACER = os.environ.get("TRACED_WITH", "opentelemetry")

urlpatterns: list[Any] = []  # Django's, filled by django_app()


def django_app(instrument: Any = None) -> Any:
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse
    from django.urls import path

    settings.configure(
        DEBUG=False,
        SECRET_KEY="traced-app-test-secret-key-long-enough-for-django-checks",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["bridge.observe.RouteMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    if instrument is not None:
        instrument()  # after the settings, before Django loads its middleware
    django.setup()

    def item(request: Any, item_id: int) -> Any:
        return HttpResponse(f"item {item_id}")

    def boom(request: Any, n: int) -> Any:
        raise RuntimeError("the legacy view failed")

    urlpatterns[:] = [path("items/<int:item_id>", item), path("boom/<int:n>", boom)]
    return get_wsgi_application()


def flask_app() -> Any:
    from .apps import legacy_flask

    return legacy_flask()


def instrumented_legacy() -> Any:
    if TRACER == "opentelemetry":
        from opentelemetry.metrics import NoOpMeterProvider

        if FRAMEWORK == "django":
            from opentelemetry.instrumentation.django import DjangoInstrumentor

            # HTTP metrics come from the ASGI layer.
            return django_app(
                lambda: DjangoInstrumentor().instrument(meter_provider=NoOpMeterProvider())
            )
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        app = flask_app()
        FlaskInstrumentor().instrument_app(app, meter_provider=NoOpMeterProvider())
        return app
    return django_app() if FRAMEWORK == "django" else flask_app()


def traced(bridge: Bridge) -> tuple[ASGIApp, Any]:
    """``bridge`` in the tracer's ASGI middleware, and a function that reports what it saw."""
    if TRACER == "opentelemetry":
        from opentelemetry import trace
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        def spans() -> list[dict[str, Any]]:
            return [
                {
                    "name": s.name,
                    "kind": s.kind.name,
                    "trace_id": f"{s.context.trace_id:032x}" if s.context else "",
                    "parent": f"{s.parent.span_id:016x}" if s.parent else None,
                    "span_id": f"{s.context.span_id:016x}" if s.context else "",
                    "route": (s.attributes or {}).get("http.route"),
                }
                for s in exporter.get_finished_spans()
            ]

        return OpenTelemetryMiddleware(bridge), spans
    import sentry_sdk
    from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

    from .test_sentry import MemoryTransport

    transport = MemoryTransport()
    if FRAMEWORK == "django":
        from sentry_sdk.integrations.django import DjangoIntegration

        framework: Any = DjangoIntegration()  # its default style names by URL pattern
    else:
        from sentry_sdk.integrations.flask import FlaskIntegration

        framework = FlaskIntegration(transaction_style="url")
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",
        transport=transport,
        traces_sample_rate=1.0,
        integrations=[framework],
    )

    def events() -> list[dict[str, Any]]:
        sentry_sdk.flush()
        return [
            {
                "type": kind,
                "transaction": event.get("transaction"),
                "trace_id": event["contexts"]["trace"]["trace_id"],
                "url": (event.get("request") or {}).get("url"),
                "method": (event.get("request") or {}).get("method"),
                "errors": [v["value"] for v in event.get("exception", {}).get("values", [])],
            }
            for kind in ("transaction", "event")
            for event in transport.events(kind)
        ]

    return SentryAsgiMiddleware(bridge, transaction_style="url"), events


bridge = Bridge(instrumented_legacy())


@bridge.route("/orders/<int:order_id>", methods=["GET"])
async def order(request: Request, order_id: int) -> Response:
    return Response(f"order {order_id}")


@bridge.route("/async-boom/<int:n>")
async def async_boom(request: Request, n: int) -> Response:
    raise RuntimeError("the async view failed")


tracing, seen = traced(bridge)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/_seen":
        body = json.dumps(seen()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await tracing(scope, receive, send)
