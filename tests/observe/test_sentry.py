"""Sentry around ``Bridge`` with its Flask integration left on: one transaction per
request, named by route, and each error reported once with the request, in one trace.
The real SDK, with an in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.asgi import SentryAsgiMiddleware
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware
from sentry_sdk.transport import Transport

from .apps import bridged, legacy_flask


class MemoryTransport(Transport):
    """Keeps every envelope instead of sending it."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of one item type: "transaction" or "event" (an error)."""
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == kind and item.payload.json is not None
        ]


class Observed:
    def __init__(self, style: str) -> None:
        self.transport = MemoryTransport()
        sentry_sdk.init(
            dsn="http://public@127.0.0.1:9/1",
            transport=self.transport,
            traces_sample_rate=1.0,
            integrations=[FlaskIntegration(transaction_style=style)],
            # Patches installed once stay for the whole test session: only Flask's here
            # (and the defaults: logging, deduplication, threads), not httpx's or redis's.
            auto_enabling_integrations=False,
        )
        self.app = SentryAsgiMiddleware(bridged(legacy_flask()), transaction_style=style)

    def get(self, path: str) -> httpx.Response | None:
        """The response; None when bridge cut it after its headers (a body that failed
        midway), which httpx's ASGI transport refuses to hand back as a response."""

        async def main() -> httpx.Response | None:
            transport = httpx.ASGITransport(self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                try:
                    return await c.get(path, headers={"x-request-tag": "tagged"})
                except AssertionError:  # the transport's check that the response completed
                    return None

        response = asyncio.run(main())
        sentry_sdk.flush()
        return response

    def close(self) -> None:
        """Leave an inactive client with no integrations to the tests that follow: the
        patched Flask and logging then pass straight through."""
        sentry_sdk.get_client().close()
        sentry_sdk.init(default_integrations=False, auto_enabling_integrations=False)

    def transactions(self) -> list[dict[str, Any]]:
        return self.transport.events("transaction")

    def errors(self) -> list[dict[str, Any]]:
        return self.transport.events("event")


@pytest.fixture
def sentry() -> Iterator[Observed]:
    observed = Observed("url")
    yield observed
    observed.close()


def trace_id(event: dict[str, Any]) -> str:
    found: str = event["contexts"]["trace"]["trace_id"]
    return found


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/items/7", "/items/<int:item_id>"),  # legacy, named by Flask's integration
        ("/orders/7", "/orders/<int:order_id>"),  # async route, named from the scope
        ("/carts/7", "/carts/<int:cart_id>"),  # sync route
    ],
)
def test_one_transaction_named_by_the_route(sentry: Observed, path: str, name: str) -> None:
    assert sentry.get(path).status_code == 200
    [transaction] = sentry.transactions()
    assert transaction["transaction"] == name
    assert transaction["transaction_info"] == {"source": "route"}
    assert sentry.errors() == []


@pytest.mark.parametrize(
    ("path", "name", "message"),
    [
        ("/boom/1", "/boom/<int:n>", "the legacy view failed"),
        ("/stream/1", "/stream/<int:n>", "the legacy body failed"),
        ("/async-boom/1", "/async-boom/<int:n>", "the async view failed"),
        ("/sync-boom/1", "/sync-boom/<int:n>", "the sync view failed"),
        ("/sync-body-boom/1", "/sync-body-boom/<int:n>", "the sync body failed"),
        ("/async-body-boom/1", "/async-body-boom/<int:n>", "the async body failed"),
    ],
)
def test_an_error_is_reported_once_with_the_request_in_the_transactions_trace(
    sentry: Observed, path: str, name: str, message: str
) -> None:
    response = sentry.get(path)
    # A failure before the headers went out is a clean 500; one after cuts the body.
    if path.startswith(("/stream/", "/sync-body-boom/", "/async-body-boom/")):
        assert response is None  # the first chunk went out, so the failure cut the body
    else:
        assert response is not None and response.status_code == 500
    [transaction] = sentry.transactions()
    [error] = sentry.errors()
    assert transaction["transaction"] == name
    assert [value["value"] for value in error["exception"]["values"]] == [message]
    request = error["request"]
    assert request["url"] == f"http://testserver{path}"
    assert request["method"] == "GET"
    assert request["headers"]["x-request-tag"] == "tagged"
    assert trace_id(error) == trace_id(transaction)


def test_two_requests_two_traces(sentry: Observed) -> None:
    sentry.get("/boom/1")
    sentry.get("/boom/2")
    errors, transactions = sentry.errors(), sentry.transactions()
    assert len(errors) == len(transactions) == 2
    assert trace_id(errors[0]) != trace_id(errors[1])
    assert {trace_id(e) for e in errors} == {trace_id(t) for t in transactions}


def test_the_default_endpoint_style_names_by_endpoint_not_by_url() -> None:
    observed = Observed("endpoint")
    try:
        observed.get("/items/7")
        observed.get("/orders/7")
        names = [t["transaction"] for t in observed.transactions()]
        # Flask's endpoint for the legacy view, the view's qualified name for a route.
        assert names == ["item", "tests.observe.apps.bridged.<locals>.order"]
    finally:
        observed.close()


def test_the_trace_is_carried_into_the_legacy_environ(sentry: Observed) -> None:
    seen: dict[str, str] = {}
    flask_app = legacy_flask()

    @flask_app.get("/headers")
    def headers() -> str:
        from flask import request

        seen.update(
            sentry_trace=request.environ.get("HTTP_SENTRY_TRACE", ""),
            baggage=request.environ.get("HTTP_BAGGAGE", ""),
        )
        return "ok"

    sentry.app = SentryAsgiMiddleware(bridged(flask_app), transaction_style="url")
    sentry.get("/headers")
    [transaction] = sentry.transactions()
    assert seen["sentry_trace"].startswith(trace_id(transaction) + "-")
    assert f"sentry-trace_id={trace_id(transaction)}" in seen["baggage"]


def test_a_route_inside_a_sentry_instrumented_legacy_middleware(sentry: Observed) -> None:
    bridge = bridged(legacy_flask())

    @bridge.route("/wrapped/<int:n>", middleware=SentryWsgiMiddleware)
    def wrapped(request: Any, n: int) -> str:
        raise RuntimeError("the wrapped view failed")

    sentry.app = SentryAsgiMiddleware(bridge, transaction_style="url")
    assert sentry.get("/wrapped/3").status_code == 500
    [transaction] = sentry.transactions()
    [error] = sentry.errors()
    assert transaction["transaction"] == "/wrapped/<int:n>"
    assert trace_id(error) == trace_id(transaction)
    assert error["request"]["url"] == "http://testserver/wrapped/3"
