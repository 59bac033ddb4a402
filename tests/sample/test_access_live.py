"""Who gets bridge's dashboard and metrics on a real uvicorn that believes every
forwarded address (``--proxy-headers --forwarded-allow-ips '*'``, the deployment guide's
example), and what its access logs keep of the dashboard token.

The findings these hold: ``X-Forwarded-For: 127.0.0.1, 203.0.113.7`` (nginx's
``$proxy_add_x_forwarded_for`` after a spoof) made uvicorn report the client as
127.0.0.1 and opened the dashboard; ``Host: attacker.example`` got ``data.json`` (DNS
rebinding); the page re-sent ``?token=`` on every poll, so the logs recorded it every 2 s.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from sample_wsgi_app import init_db
from tests.browser import browser_fixture, fresh_page
from tests.servers import free_port, running

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.live

TOKEN = "dashboard-token-4f1c9a7e2b"
PAGES = ("/_bridge/", "/_bridge/data.json", "/_bridge/metrics")
SPOOFED = "127.0.0.1, 203.0.113.7"

chromium = browser_fixture()


class Relay:
    """A proxy on this host that relays bytes and adds no forwarded-address header."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream), 5)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def uvicorn(data_dir: Path, log: Path, token: str | None = None) -> Iterator[str]:
    """The migrated sample app under uvicorn trusting every forwarded address, with its
    access log on; yields the base URL."""
    init_db(data_dir)
    port = free_port()
    args = [
        "uvicorn", "tests.sample.logged_app:application", "--host", "127.0.0.1",
        "--port", str(port), "--proxy-headers", "--forwarded-allow-ips", "*",
    ]  # fmt: skip
    env = {"SAMPLE_DATA_DIR": str(data_dir), "BRIDGE_DASHBOARD_TOKEN": token or ""}
    with running(args, port, env=env, log=log):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").status_code == 200
        yield base


@pytest.fixture(scope="module")
def open_to_loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("loopback")
    with uvicorn(base / "data", base / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("token")
    with uvicorn(base / "data", base / "server.log", token=TOKEN) as url:
        yield url, base / "server.log"


def test_a_loopback_client_gets_the_pages(open_to_loopback: str) -> None:
    with httpx.Client(base_url=open_to_loopback, timeout=10) as http:
        for path in PAGES:
            assert http.get(path).status_code == 200, path


@pytest.mark.parametrize("forwarded", [SPOOFED, "127.0.0.1", "::1"])
def test_a_forwarded_loopback_address_does_not_open_the_pages(
    open_to_loopback: str, forwarded: str
) -> None:
    with httpx.Client(base_url=open_to_loopback, timeout=10) as http:
        for path in PAGES:
            refused = http.get(path, headers={"X-Forwarded-For": forwarded})
            assert refused.status_code == 403, path
            assert "relayed by a proxy" in refused.text
        # The legacy app still sees the address uvicorn made of it: bridge only
        # stops believing it for its own pages.
        assert http.get("/items", headers={"X-Forwarded-For": forwarded}).status_code == 200


def test_another_host_name_is_refused(open_to_loopback: str) -> None:
    with httpx.Client(base_url=open_to_loopback, timeout=10) as http:
        for path in PAGES:
            refused = http.get(path, headers={"Host": "attacker.example"})
            assert refused.status_code == 403, path
            assert '"attacker.example"' in refused.text
        assert http.get("/_bridge/data.json", headers={"Host": "localhost"}).status_code == 200


def test_a_same_host_proxy_without_forwarded_headers_is_handled_as_documented(
    open_to_loopback: str, with_token: tuple[str, Path]
) -> None:
    """SECURITY.md: such a proxy makes every client it relays loopback, so set a token;
    with one, loopback is not enough, through the proxy or not."""
    for base, status in ((open_to_loopback, 200), (with_token[0], 403)):
        relay = Relay(int(base.rsplit(":", 1)[1]))
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{relay.port}", timeout=10) as http:
                response = http.get("/_bridge/data.json")
                assert response.status_code == status, response.text
                # A proxy that passes on the public Host name is refused by the allow-list.
                public = http.get("/_bridge/data.json", headers={"Host": "www.example.com"})
                assert public.status_code == 403
        finally:
            relay.close()


def exchange(http: httpx.Client) -> None:
    """Open the page with ``?token=`` as a person would paste it, and follow the redirect."""
    first = http.get(f"/_bridge/?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/_bridge/"
    attributes = first.headers["set-cookie"].split("; ")
    assert {"HttpOnly", "SameSite=Strict", "Path=/_bridge"} <= set(attributes)
    page = http.get(first.headers["location"])
    assert page.status_code == 200 and TOKEN not in page.text


def test_the_token_is_traded_for_a_cookie_and_polls_never_carry_it(
    with_token: tuple[str, Path],
) -> None:
    base, log = with_token
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/_bridge/data.json").status_code == 403
        exchange(http)
        for _ in range(3):
            assert http.get("/_bridge/data.json").status_code == 200
        # The token is for the dashboard only; the metrics want their own rule.
        assert http.get("/_bridge/metrics").status_code == 200  # loopback, no metrics_token
        assert (
            http.get("/_bridge/metrics", headers={"X-Forwarded-For": "1.2.3.4"}).status_code == 403
        )
    assert_token_logged_only_at_the_exchange(log, minimum_polls=3)


def assert_token_logged_only_at_the_exchange(log: Path, minimum_polls: int) -> None:
    """Both logs (uvicorn's access log and the sample's request log) show the token only on
    the lines of the exchange, never on a poll of data.json."""
    deadline = time.monotonic() + 10
    while True:
        lines = log.read_text(errors="replace").splitlines()
        polls = [line for line in lines if "/_bridge/data.json" in line and " 200" in line]
        uvicorn_polls = [line for line in polls if not line.startswith("sample: ")]
        sample_polls = [line for line in polls if line.startswith("sample: ")]
        if min(len(uvicorn_polls), len(sample_polls)) >= minimum_polls:
            break
        assert time.monotonic() < deadline, "\n".join(lines[-40:])
        time.sleep(0.1)
    with_token = [line for line in lines if TOKEN in line]
    assert with_token, "the exchange itself should be logged"
    assert all("GET /_bridge/?token=" in line for line in with_token), with_token
    assert not [line for line in polls if TOKEN in line]


@pytest.mark.browser
def test_chromium_opens_the_dashboard_through_the_token_and_polls_with_the_cookie(
    chromium: Browser, with_token: tuple[str, Path]
) -> None:
    base, log = with_token
    with fresh_page(chromium) as page:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/_bridge/?token={TOKEN}")
        assert page.url == f"{base}/_bridge/"  # redirected: the token left the address bar
        page.wait_for_selector("body[data-loaded='1']")
        deadline = time.monotonic() + 20
        while sum("/data.json" in url for url in requested) < 3:  # the page polls every 2 s
            assert time.monotonic() < deadline, requested
            page.wait_for_timeout(250)
        assert errors == []
        assert page.locator("#routes tr").count() >= 1
        polls = [url for url in requested if "/data.json" in url]
        assert all(TOKEN not in url and "?" not in url for url in polls), polls
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "bridge_dashboard"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # out of the page script's reach
    assert_token_logged_only_at_the_exchange(log, minimum_polls=3)
