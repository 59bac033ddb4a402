"""OpenTelemetry and Sentry around ``Bridge`` under real servers (bridge serve on uvicorn,
and gunicorn's worker), with Flask and Django and their integrations left on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ..servers import free_port, running

APP = "tests.observe.traced_app:application"

pytestmark = pytest.mark.live


def command(server: str, port: int) -> list[str]:
    if server == "gunicorn":
        return ["gunicorn", "-k", "bridge.gunicorn.Worker", "-b", f"127.0.0.1:{port}", APP]
    return ["bridge", "serve", APP, "--port", str(port)]


class Served:
    def __init__(self, port: int) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}")

    def get(self, path: str) -> int:
        return self.client.get(path).status_code

    def seen(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.client.get("/_seen").json()
        return found


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Any:
    def start(server: str, framework: str, tracer: str) -> Served:
        port = free_port()
        env = {"TRACED_FRAMEWORK": framework, "TRACED_WITH": tracer}
        context = running(command(server, port), port, env=env)
        context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
        served = Served(port)
        request.addfinalizer(served.client.close)
        return served

    return start


CASES = [
    (server, framework) for server in ("uvicorn", "gunicorn") for framework in ("flask", "django")
]


@pytest.mark.parametrize(("server", "framework"), CASES)
def test_opentelemetry_one_trace_per_request_named_by_route(
    serve: Any, server: str, framework: str
) -> None:
    served = serve(server, framework, "opentelemetry")
    assert served.get("/items/7") == 200
    assert served.get("/orders/8") == 200
    spans = served.seen()
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert [(s["name"], s["route"]) for s in servers] == [
        ("GET /items/<int:item_id>", "/items/<int:item_id>"),
        ("GET /orders/<int:order_id>", "/orders/<int:order_id>"),
    ]
    assert len({s["trace_id"] for s in spans}) == 2
    # The framework's own span is a child in the legacy request's trace.
    legacy_trace = servers[0]["trace_id"]
    children = [s for s in spans if s["trace_id"] == legacy_trace and s["kind"] == "INTERNAL"]
    assert any(s["parent"] == servers[0]["span_id"] and "http" not in s["name"] for s in children)


@pytest.mark.parametrize(("server", "framework"), CASES)
def test_sentry_one_transaction_and_one_error_per_request(
    serve: Any, server: str, framework: str
) -> None:
    served = serve(server, framework, "sentry")
    port_url = str(served.client.base_url).rstrip("/")
    assert served.get("/boom/1") == 500
    assert served.get("/async-boom/2") == 500
    events = served.seen()
    transactions = [e for e in events if e["type"] == "transaction"]
    errors = [e for e in events if e["type"] == "event"]
    # Sentry's Django integration writes a URL pattern its own way.
    legacy = "/boom/{n}" if framework == "django" else "/boom/<int:n>"
    assert [t["transaction"] for t in transactions] == [legacy, "/async-boom/<int:n>"]
    assert [(e["errors"], e["url"], e["method"]) for e in errors] == [
        (["the legacy view failed"], f"{port_url}/boom/1", "GET"),
        (["the async view failed"], f"{port_url}/async-boom/2", "GET"),
    ]
    assert [e["trace_id"] for e in errors] == [t["trace_id"] for t in transactions]
