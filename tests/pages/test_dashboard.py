"""``bridge.dashboard``: bridge's own metrics and dashboard paths, off by default, guarded."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.metrics import Metrics
from bridge.pages import access
from tests.asgi import Client, http_scope
from tests.browser import fresh_page, launched, skip_without_chromium
from tests.servers import uvicorn_in_thread

Environ = dict[str, Any]
TOKEN = "s3cret-token-0123456789"
DOCS = Path(__file__).resolve().parents[2] / "docs"


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


def cookie_of(response: Client) -> str:
    """The ``name=value`` part of the response's Set-Cookie."""
    return response.headers[b"set-cookie"].decode().split(";")[0]


def test_with_a_token_every_client_must_give_it() -> None:
    app, legacy = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    assert get(app, "/_bridge/").status == 403  # loopback is not enough any more
    assert get(app, "/_bridge/", query_string=b"token=wrong").status == 403
    bearer = [(b"authorization", b"Bearer wrong")]
    assert get(app, "/_bridge/data.json", headers=bearer).status == 403
    remote = ("203.0.113.5", 4000)
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    page = get(app, "/_bridge/", client=remote, headers=bearer)
    assert page.status == 200 and b"<svg" in page.body
    data = get(app, "/_bridge/data.json", client=remote, headers=bearer)
    assert data.status == 200 and "routes" in json.loads(data.body)
    assert legacy.paths == []


def test_a_token_in_the_url_is_exchanged_for_a_cookie_and_dropped_from_the_url() -> None:
    app, legacy = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    remote = ("203.0.113.5", 4000)
    query = f"range=1h&token={TOKEN}".encode()
    exchanged = get(app, "/app/_bridge/", client=remote, query_string=query, root_path="/app")
    assert exchanged.status == 303
    assert exchanged.headers[b"location"] == b"/app/_bridge/?range=1h"  # the token is gone
    attributes = exchanged.headers[b"set-cookie"].decode().split("; ")
    assert attributes[0].startswith("bridge_dashboard=") and TOKEN not in attributes[0]
    # Only the dashboard's own path gets it back: the legacy app never sees it.
    assert {"HttpOnly", "SameSite=Strict", "Path=/app/_bridge"} <= set(attributes)
    assert "Secure" not in attributes  # plain http: a Secure cookie would never come back
    cookie = [(b"cookie", f"other=1; {cookie_of(exchanged)}".encode())]
    page = get(app, "/app/_bridge/", client=remote, headers=cookie, root_path="/app")
    assert page.status == 200 and b"<svg" in page.body
    assert b"location.search" not in page.body  # the polls carry no query string
    data = get(app, "/app/_bridge/data.json", client=remote, headers=cookie, root_path="/app")
    assert data.status == 200 and "routes" in json.loads(data.body)
    assert legacy.paths == []


def test_the_cookie_is_secure_over_https() -> None:
    app, _ = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    exchanged = get(app, "/_bridge", query_string=f"token={TOKEN}".encode(), scheme="https")
    assert exchanged.status == 303 and exchanged.headers[b"location"] == b"/_bridge"
    assert "Secure" in exchanged.headers[b"set-cookie"].decode().split("; ")


def test_the_polls_do_not_take_the_token_in_the_url() -> None:
    app, _ = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    refused = get(app, "/_bridge/data.json", query_string=f"token={TOKEN}".encode())
    assert refused.status == 403
    assert b"exchanged for a cookie" in refused.body


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "123.abc", "999999999999.0000", "x.y.z", '"quoted"'],
)
def test_forged_dashboard_cookies_are_refused(value: str) -> None:
    app, _ = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    cookie = [(b"cookie", f"bridge_dashboard={value}".encode())]
    assert get(app, "/_bridge/data.json", headers=cookie).status == 403


def test_a_cookie_outlives_neither_its_age_nor_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = make(dashboard_path="/_bridge/", dashboard_token=TOKEN)
    exchanged = get(app, "/_bridge/", query_string=f"token={TOKEN}".encode())
    cookie = [(b"cookie", cookie_of(exchanged).encode())]
    assert get(app, "/_bridge/data.json", headers=cookie).status == 200
    rotated, _ = make(dashboard_path="/_bridge/", dashboard_token=TOKEN + "-rotated")
    assert get(rotated, "/_bridge/data.json", headers=cookie).status == 403
    later = time.time() + access.COOKIE_MAX_AGE + 60
    monkeypatch.setattr(access.time, "time", lambda: later)
    assert get(app, "/_bridge/data.json", headers=cookie).status == 403  # checked here too


# -- the loopback rule and forwarded addresses --------------------------------------------------

SPOOFED = b"127.0.0.1, 203.0.113.7"  # what nginx's $proxy_add_x_forwarded_for makes of a spoof


@pytest.mark.parametrize(
    "header",
    [
        (b"x-forwarded-for", SPOOFED),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"forwarded", b"for=127.0.0.1"),
        (b"x-real-ip", b"127.0.0.1"),
    ],
)
def test_a_relayed_request_is_never_loopback(header: tuple[bytes, bytes]) -> None:
    app, legacy = make(dashboard_path="/_bridge/", metrics_path="/_bridge/metrics")
    for path in ("/_bridge/", "/_bridge/data.json", "/_bridge/metrics"):
        refused = get(app, path, headers=[header])  # the peer itself is 127.0.0.1
        assert refused.status == 403, path
        assert b"relayed by a proxy" in refused.body
    assert legacy.paths == []


@pytest.mark.parametrize(
    ("peer", "forwarded", "status"),
    [
        ("10.0.0.2", b"203.0.113.7", 403),  # a remote client through the trusted proxy
        ("10.0.0.2", SPOOFED, 403),  # the spoof: the proxy appended the real address
        ("10.0.0.2", b"127.0.0.1", 200),  # a client on the proxy's machine
        ("10.0.0.2", b"::1, 10.0.0.3", 200),  # two trusted hops
        ("203.0.113.9", b"127.0.0.1", 403),  # relayed by a proxy nobody named
        ("127.0.0.1", b"127.0.0.1", 403),  # even a loopback one: a server may have put it there
        ("10.0.0.2", b"10.0.0.3", 403),  # nothing but proxies: no client left to believe
        ("10.0.0.2", b"unknown", 403),  # an address that cannot be read
    ],
)
def test_trusted_proxies_are_believed_and_nobody_else(
    peer: str, forwarded: bytes, status: int
) -> None:
    app, _ = make(dashboard_path="/_bridge/", trusted_proxies=["10.0.0.0/24"])
    headers = [(b"x-forwarded-for", forwarded)]
    assert get(app, "/_bridge/data.json", client=(peer, 4000), headers=headers).status == status


def test_a_proxy_named_with_forwarded_is_read_by_forwarded() -> None:
    app, _ = make(dashboard_path="/_bridge/", trusted_proxies={"10.0.0.2": "Forwarded"})
    local = [(b"forwarded", b'for="[::1]:4711";proto=http')]
    assert get(app, "/_bridge/", client=("10.0.0.2", 1), headers=local).status == 200
    remote = [(b"forwarded", b"for=127.0.0.1, for=198.51.100.4")]
    assert get(app, "/_bridge/", client=("10.0.0.2", 1), headers=remote).status == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # The attack: the client writes X-Forwarded-For; the proxy sets X-Real-IP.
        ([(b"x-forwarded-for", b"127.0.0.2"), (b"x-real-ip", b"203.0.113.7")], 403),
        ([(b"x-forwarded-for", b"127.0.0.1")], 403),  # the proxy's own header is missing
        ([(b"forwarded", b"for=127.0.0.1"), (b"x-real-ip", b"198.51.100.4")], 403),
        ([(b"x-forwarded-for", b"203.0.113.7"), (b"x-real-ip", b"127.0.0.1")], 200),
        ([], 403),  # a trusted proxy that names no client
    ],
)
def test_behind_an_x_real_ip_proxy_only_x_real_ip_counts(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    app, _ = make(
        dashboard_path="/_bridge/",
        metrics_path="/_bridge/metrics",
        trusted_proxies={"10.0.0.2": "x-real-ip"},
    )
    for path in ("/_bridge/", "/_bridge/data.json", "/_bridge/metrics"):
        assert get(app, path, client=("10.0.0.2", 1), headers=headers).status == status, path


def test_a_plain_list_of_proxies_means_x_forwarded_for() -> None:
    """The old form keeps working, and reads X-Forwarded-For only (uvicorn's default)."""
    app, _ = make(dashboard_path="/_bridge/", trusted_proxies=["10.0.0.2"])
    spoofed = [(b"x-real-ip", b"127.0.0.1"), (b"x-forwarded-for", b"198.51.100.4")]
    assert get(app, "/_bridge/", client=("10.0.0.2", 1), headers=spoofed).status == 403
    local = [(b"x-real-ip", b"198.51.100.4"), (b"x-forwarded-for", b"127.0.0.1")]
    assert get(app, "/_bridge/", client=("10.0.0.2", 1), headers=local).status == 200


def test_a_custom_proxy_header_marks_requests_from_others_as_relayed() -> None:
    app, _ = make(dashboard_path="/_bridge/", trusted_proxies={"10.0.0.2": "cf-connecting-ip"})
    relayed = [(b"cf-connecting-ip", b"127.0.0.1")]
    assert get(app, "/_bridge/", client=("10.0.0.2", 1), headers=relayed).status == 200
    # Loopback peer, but the header says a proxy relayed it: not provably local.
    assert get(app, "/_bridge/", client=("127.0.0.1", 1), headers=relayed).status == 403


@pytest.mark.parametrize(
    ("proxies", "message"),
    [
        (["*"], "would believe any client"),
        (["proxy.internal"], "not an IP address"),
        ({"10.0.0.2": "x real ip"}, "header 'x real ip', which is not a header name"),
        ({"10.0.0.2": ""}, 'such as {"10.0.0.2": "x-real-ip"}'),
    ],
)
def test_bad_trusted_proxies_are_refused(proxies: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(dashboard_path="/_bridge/", trusted_proxies=proxies)


# -- the Host allow-list (DNS rebinding) ---------------------------------------------------------


@pytest.mark.parametrize("host", [b"attacker.example", b"attacker.example:8000", b"127.0.0.2"])
def test_an_unknown_host_is_refused_even_from_loopback(host: bytes) -> None:
    app, legacy = make(dashboard_path="/_bridge/", metrics_path="/_bridge/metrics")
    for path in ("/_bridge/", "/_bridge/data.json", "/_bridge/metrics"):
        refused = get(app, path, headers=[(b"host", host)])
        assert refused.status == 403, path
        assert b"allowed_hosts" in refused.body
    assert legacy.paths == []


@pytest.mark.parametrize(
    "host", [b"localhost", b"localhost:8000", b"app.localhost", b"127.0.0.1:8000", b"[::1]:8000"]
)
def test_loopback_names_are_allowed_by_default(host: bytes) -> None:
    app, _ = make(dashboard_path="/_bridge/")
    assert get(app, "/_bridge/", headers=[(b"host", host)]).status == 200


def test_allowed_hosts_replace_the_loopback_names() -> None:
    app, _ = make(dashboard_path="/_bridge/", allowed_hosts=[".example.com", "[2001:db8::1]"])
    for host in (b"example.com", b"ops.example.com:443", b"[2001:db8::1]:80"):
        assert get(app, "/_bridge/", headers=[(b"host", host)]).status == 200, host
    for host in (b"localhost", b"example.com.evil.test", b"badexample.com"):
        assert get(app, "/_bridge/", headers=[(b"host", host)]).status == 403, host
    anywhere, _ = make(dashboard_path="/_bridge/", allowed_hosts=["*"])
    assert get(anywhere, "/_bridge/", headers=[(b"host", b"whatever.test")]).status == 200
    with pytest.raises(TypeError, match="must be a list of names"):
        make(dashboard_path="/_bridge/", allowed_hosts="example.com")


# -- the metrics path ------------------------------------------------------------------------------


def test_the_metrics_path_takes_the_loopback_rule_or_its_own_token() -> None:
    remote = ("203.0.113.5", 4000)
    open_to_loopback, _ = make(metrics_path="/_bridge/metrics")
    assert get(open_to_loopback, "/_bridge/metrics").status == 200
    assert get(open_to_loopback, "/_bridge/metrics", client=remote).status == 403
    app, _ = make(metrics_path="/_bridge/metrics", metrics_token="scrape-token")
    assert get(app, "/_bridge/metrics").status == 403  # loopback is not enough any more
    wrong = [(b"authorization", b"Bearer nope")]
    assert get(app, "/_bridge/metrics", client=remote, headers=wrong).status == 403
    bearer = [(b"authorization", b"Bearer scrape-token")]
    scraped = get(app, "/_bridge/metrics", client=remote, headers=bearer)
    assert scraped.status == 200 and b"bridge_requests_total" in scraped.body
    # The metrics token is not the dashboard's, and the other way round.
    both, _ = make(
        metrics_path="/_bridge/metrics", dashboard_path="/_bridge/",
        metrics_token="scrape-token", dashboard_token=TOKEN,
    )  # fmt: skip
    assert get(both, "/_bridge/data.json", headers=bearer).status == 403
    dashboard_bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert get(both, "/_bridge/metrics", headers=dashboard_bearer).status == 403


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
        ({"metrics_path": "/_bridge/metrics", "metrics_token": ""}, "must not be empty"),
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
    httpx = pytest.importorskip("httpx")
    app, _ = make(
        dashboard_path="/_bridge/", dashboard_token=TOKEN, metrics=Metrics(history_interval=0.25)
    )

    @app.route("/orders", methods=["GET"])
    def orders(request: Request) -> str:
        return "orders"

    async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"v2"})

    app.mount("/v2", api)

    with uvicorn_in_thread(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        for round_ in range(12):
            for path in ("/items/1", "/orders", "/v2/users", "/about/team", "/"):
                for _ in range(round_ if path.startswith(("/items", "/v2")) else 4):
                    client.get(path).raise_for_status()
            threading.Event().wait(0.1)
        yield base


@pytest.mark.browser
def test_the_dashboard_in_headless_chromium(served_dashboard: str, tmp_path: Path) -> None:
    """Opens the page through the token-to-cookie exchange and renders it; with
    BRIDGE_SCREENSHOT=1 the screenshot replaces docs/dashboard.png."""
    skip_without_chromium()
    with (
        launched() as browser,
        fresh_page(browser, viewport={"width": 1280, "height": 900}) as page,
    ):
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "data.json" in r.url else None)
        page.goto(served_dashboard + f"/_bridge/?token={TOKEN}")
        assert page.url == served_dashboard + "/_bridge/"  # the token left the URL
        page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
        assert errors == []
        assert polls and all("token" not in url for url in polls)
        assert page.locator("#routes tr").count() == 5
        share = page.locator("#share").inner_text()
        assert share.endswith("%") and 0 < float(share.rstrip(" %")) < 100
        assert page.locator("#share-chart polygon").count() == 2
        keep = os.environ.get("BRIDGE_SCREENSHOT") == "1"
        shot = DOCS / "dashboard.png" if keep else tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
