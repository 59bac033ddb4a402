"""OpenTelemetry around ``Bridge``: one trace per request, the server span named by route,
and one set of HTTP server metrics, with the real SDK and in-memory exporters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .apps import bridged, legacy_flask


class Traced:
    """One app under OpenTelemetry's ASGI middleware, with its own providers."""

    def __init__(self, flask_metrics: bool = False) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        flask_app = legacy_flask()
        # The recommended setup: the ASGI middleware records the HTTP server metrics,
        # the Flask instrumentation only its spans.
        FlaskInstrumentor().instrument_app(
            flask_app,
            tracer_provider=self.tracer_provider,
            meter_provider=meter_provider if flask_metrics else NoOpMeterProvider(),
        )
        self.bridge = bridged(flask_app)
        self.app = OpenTelemetryMiddleware(
            self.bridge, tracer_provider=self.tracer_provider, meter_provider=meter_provider
        )

    def get(self, path: str) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.get(path)

        return asyncio.run(main())

    def traces(self) -> dict[int, list[ReadableSpan]]:
        found: dict[int, list[ReadableSpan]] = {}
        for span in self.spans.get_finished_spans():
            assert span.context is not None
            found.setdefault(span.context.trace_id, []).append(span)
        return found

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            (scope.scope.name, point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def traced() -> Iterator[Traced]:
    app = Traced()
    yield app
    app.tracer_provider.shutdown()


@pytest.fixture(autouse=True)
def no_detach_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """OpenTelemetry logs "Failed to detach context" when a span ends in another context."""
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        yield
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/items/7", "GET /items/<int:item_id>"),  # the legacy Flask view
        ("/orders/7", "GET /orders/<int:order_id>"),  # an async route
        ("/carts/7", "GET /carts/<int:cart_id>"),  # a sync route
    ],
)
def test_one_trace_whose_server_span_is_named_by_the_route(
    traced: Traced, path: str, name: str
) -> None:
    response = traced.get(path)
    assert response.status_code == 200
    traces = traced.traces()
    assert len(traces) == 1
    [server] = traced.server_spans()
    assert server.name == name
    assert server.attributes is not None
    assert server.attributes["http.route"] == name.split(" ", 1)[1]
    for span in next(iter(traces.values())):
        assert span is server or span.parent is not None


def test_the_flask_span_is_a_child_of_the_server_span(traced: Traced) -> None:
    traced.get("/items/7")
    [server] = traced.server_spans()
    [flask_span] = [
        s
        for s in traced.spans.get_finished_spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == "opentelemetry.instrumentation.flask"
    ]
    assert flask_span.kind is trace.SpanKind.INTERNAL
    assert flask_span.parent is not None
    assert server.context is not None
    assert flask_span.parent.span_id == server.context.span_id


def test_two_requests_two_traces(traced: Traced) -> None:
    traced.get("/items/7")
    traced.get("/items/8")
    assert len(traced.traces()) == 2
    assert [s.name for s in traced.server_spans()] == ["GET /items/<int:item_id>"] * 2


def test_a_legacy_path_flask_does_not_route_is_named_by_its_group(traced: Traced) -> None:
    response = traced.get("/nowhere/7")
    assert response.status_code == 404
    [server] = traced.server_spans()
    # bridge's path group (metrics' legacy_group), not one name per URL; and no
    # http.route, since a group is not a route the app declared.
    assert server.name == "GET /nowhere"
    assert server.attributes is not None
    assert "http.route" not in server.attributes
    # Nor does the group become a metric label: a client could make new ones at will.
    [(_, point)] = traced.points("http.server.duration")
    assert "http.target" not in point.attributes


def test_the_duration_metric_is_labelled_by_the_route(traced: Traced) -> None:
    traced.get("/items/7")
    traced.get("/orders/8")
    targets = sorted(
        point.attributes["http.target"] for _, point in traced.points("http.server.duration")
    )
    assert targets == ["/items/<int:item_id>", "/orders/<int:order_id>"]


def test_the_recommended_setup_counts_each_request_once(traced: Traced) -> None:
    for path in ("/items/7", "/items/8", "/orders/9"):
        traced.get(path)
    durations = traced.points("http.server.duration")
    assert {scope for scope, _ in durations} == {"opentelemetry.instrumentation.asgi"}
    assert sum(point.count for _, point in durations) == 3


def test_flask_metrics_left_on_count_legacy_requests_twice() -> None:
    app = Traced(flask_metrics=True)
    app.get("/items/7")
    durations = app.points("http.server.duration")
    # Why docs/observability.md gives the Flask instrumentation a no-op meter provider.
    assert sum(point.count for _, point in durations) == 2
    app.tracer_provider.shutdown()


def test_a_span_inside_the_legacy_view_joins_the_trace(traced: Traced) -> None:
    tracer = traced.tracer_provider.get_tracer("test")

    @traced.bridge.route("/inner")
    def inner(request: Any) -> str:
        with tracer.start_as_current_span("inner work"):
            return "done"

    traced.get("/inner")
    traces = traced.traces()
    assert len(traces) == 1
    [work] = [s for s in traced.spans.get_finished_spans() if s.name == "inner work"]
    assert work.parent is not None


def test_a_span_inside_async_to_sync_in_the_legacy_view_joins_the_trace(traced: Traced) -> None:
    tracer = traced.tracer_provider.get_tracer("test")

    async def fetch() -> str:
        with tracer.start_as_current_span("async work"):
            return "done"

    @traced.bridge.route("/bridged-async")
    def view(request: Any) -> str:
        return async_to_sync(fetch)()  # on the server's loop, from the view's thread

    assert traced.get("/bridged-async").text == "done"
    assert len(traced.traces()) == 1
    [work] = [s for s in traced.spans.get_finished_spans() if s.name == "async work"]
    [server] = traced.server_spans()
    assert work.parent is not None and server.context is not None
    assert work.context is not None and work.context.trace_id == server.context.trace_id
