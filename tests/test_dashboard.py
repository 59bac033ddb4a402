"""``bridge.dashboard``: bridge's own metrics and dashboard paths, off by default, guarded."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.metrics import Metrics

from .asgi import Client, http_scope

Environ = dict[str, Any]
TOKEN = "s3cret-token-0123456789"
DOCS = Path(__file__).resolve().parent.parent / "docs"


class Legacy:
    """A legacy app that records the paths it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"legacy"]


def make(**options: Any) -> tuple[Bridge, Legacy]:
    legacy = Legacy()
    app = Bridge(validator(legacy), **options)

    @app.route("/items/<int:item_id>", methods=["GET"])
    async def item(request: Request, item_id: int) -> Response:
        return Response(f"item {item_id}")

    return app, legacy


def get(app: Bridge, path: str, **scope: Any) -> Client:
    client = Client()
    asyncio.run(client.run(app, http_scope(path, **scope)))
    return client


def test_the_dashboard_and_metrics_are_off_by_default() -> None:
    app, legacy = make()
    for path in ("/_bridge/", "/_bridge/data.json", "/_bridge/metrics"):
        assert get(app, path).body == b"legacy"
    assert legacy.paths == ["/_bridge/", "/_bridge/data.json", "/_bridge/metrics"]


def test_the_dashboard_renders_for_loopback_clients_with_data() -> None:
    app, legacy = make(dashboard_path="/_bridge/")
    get(app, "/items/3")
    get(app, "/orders/9")
    page = get(app, "/_bridge/")
    assert page.status == 200
    assert page.headers[b"content-type"] == b"text/html; charset=utf-8"
    assert b"default-src 'none'" in page.headers[b"content-security-policy"]
    html = page.body.decode()
    assert '"/_bridge/data.json"' in html and "<svg" in html
    assert "http://" not in html.replace('"http://www.w3.org/2000/svg"', "")  # nothing remote
    assert get(app, "/_bridge").status == 200  # without the slash too

    data = get(app, "/_bridge/data.json")
    assert data.headers[b"content-type"] == b"application/json"
    snapshot = json.loads(data.body)
    routes = {(r["route"], r["kind"]): r for r in snapshot["routes"]}
    assert routes[("/items/<int:item_id>", "async")]["requests"] == 1
    assert routes[("/orders", "legacy")]["requests"] == 1
    assert snapshot["totals"] == {"legacy": 1, "migrated": 1}
    assert snapshot["pool"]["size"] == 32
    assert legacy.paths == ["/orders/9"]  # the dashboard never reached the legacy app


def test_ipv6_and_mapped_loopback_are_local() -> None:
    app, _ = make(dashboard_path="/_bridge/")
    assert get(app, "/_bridge/", client=("::1", 4000)).status == 200
    assert get(app, "/_bridge/", client=("::ffff:127.0.0.1", 4000)).status == 200


@pytest.mark.parametrize("client", [("203.0.113.5", 4000), ("10.0.0.2", 4000), None])
def test_other_clients_are_refused_without_a_token(client: tuple[str, int] | None) -> None:
    app, legacy = make(dashboard_path="/_bridge/")
    for path in ("/_bridge/", "/_bridge/data.json"):
        refused = get(app, path, client=client)
        assert refused.status == 403
        assert b"loopback" in refused.body
    assert legacy.paths == []


def test_with_a_token_every_client_must_give_it() -> None:
    app, legacy = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    assert get(app, "/_bridge/").status == 403  # loopback is not enough any more
    assert get(app, "/_bridge/", query_string=b"token=wrong").status == 403
    bearer = [(b"authorization", b"Bearer wrong")]
    assert get(app, "/_bridge/data.json", headers=bearer).status == 403
    remote = ("203.0.113.5", 4000)
    page = get(app, "/_bridge/", client=remote, query_string=f"token={TOKEN}".encode())
    assert page.status == 200 and b"<svg" in page.body
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    data = get(app, "/_bridge/data.json", client=remote, headers=bearer)
    assert data.status == 200 and "routes" in json.loads(data.body)
    assert legacy.paths == []


def test_the_page_fetches_its_data_below_root_path() -> None:
    app, _ = make(dashboard_path="/_bridge")
    page = get(app, "/app/_bridge/", root_path="/app")
    assert page.status == 200
    assert '"/app/_bridge/data.json"' in page.body.decode()


def test_the_prometheus_path_is_served_by_bridge() -> None:
    app, legacy = make(metrics_path="/_bridge/metrics")
    get(app, "/items/1")
    text = get(app, "/_bridge/metrics")
    assert text.status == 200
    assert text.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert b'bridge_requests_total{route="/items/<int:item_id>",kind="async"} 1' in text.body
    assert get(app, "/_bridge/metrics", method="HEAD").body == b""
    refused = get(app, "/_bridge/metrics", method="POST")
    assert refused.status == 405 and refused.headers[b"allow"] == b"GET, HEAD"
    assert legacy.paths == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dashboard_path": "/"}, "would hide the legacy app"),
        ({"dashboard_path": "_bridge"}, 'must start with "/"'),
        ({"metrics_path": "metrics"}, 'must start with "/"'),
        ({"dashboard_path": "/_bridge/", "dashboard_token": ""}, "must not be empty"),
    ],
)
def test_bad_paths_are_refused_with_a_sentence(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**options)


# -- in a real browser -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served_dashboard() -> Iterator[str]:
    """The demo app under uvicorn in a thread, with some traffic of each kind."""
    uvicorn = pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    app, _ = make(dashboard_path="/_bridge/", metrics=Metrics(history_interval=0.25))

    @app.route("/orders", methods=["GET"])
    def orders(request: Request) -> str:
        return "orders"

    async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"v2"})

    app.mount("/v2", api)

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            for _ in range(200):
                if server.started:
                    break
                threading.Event().wait(0.02)
            for round_ in range(12):
                for path in ("/items/1", "/orders", "/v2/users", "/about/team", "/"):
                    for _ in range(round_ if path.startswith(("/items", "/v2")) else 4):
                        client.get(path).raise_for_status()
                threading.Event().wait(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.browser
def test_the_dashboard_in_headless_chromium(served_dashboard: str, tmp_path: Path) -> None:
    """Renders the page; with BRIDGE_SCREENSHOT=1 the screenshot replaces docs/dashboard.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
    )
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium).")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(served_dashboard + "/_bridge/")
            page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
            assert errors == []
            assert page.locator("#routes tr").count() == 5
            share = page.locator("#share").inner_text()
            assert share.endswith("%") and 0 < float(share.rstrip(" %")) < 100
            assert page.locator("#share-chart polygon").count() == 2
            keep = os.environ.get("BRIDGE_SCREENSHOT") == "1"
            shot = DOCS / "dashboard.png" if keep else tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
