"""The entrypoint swap: the sample app answers the same under gunicorn and under bridge.

The same requests go to ``gunicorn sample_wsgi_app:app`` (the legacy deployment),
``uvicorn sample_wsgi_app.asgi:application`` (the one-line swap) and
``python -m bridge serve sample_wsgi_app:app``, each with a fresh data directory and
its own cookie jar. gunicorn's response is the reference; each bridge response must
equal it once the differences listed in NORMALISATIONS are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from sample_wsgi_app import SESSION_COOKIE, load_session
from sample_wsgi_app.sessions import CSRF_SESSION_KEY, ISSUED_SESSION_KEY, canonical_json

from .conftest import SECRET, Served

pytestmark = pytest.mark.live

MIB = 1024 * 1024
REQUEST_TIMEOUT = 30.0
# Bodies larger than this are compared by length and SHA-256, to keep diffs readable.
DIGEST_OVER = 64 * 1024

# Set by the server, not the application, and so never compared:
# * date: the clock moves between the requests.
# * server: it names the server, which is the point of the swap.
# * connection, keep-alive: gunicorn's sync worker closes every connection, uvicorn
#   keeps it open; connection management, not the response.
# * transfer-encoding: framing. httpx has removed the chunking, so the bodies compared
#   are what the application produced.
SERVER_HEADERS = frozenset({"date", "server", "connection", "keep-alive", "transfer-encoding"})

NORMALISATIONS = (
    "Drop the headers in SERVER_HEADERS; compare the rest as name -> [values in order].",
    # The value is checked against the body received, then compared only by presence:
    # the body itself is compared, and a scrubbed body (a report's timing) may change
    # length without the response being different.
    "Check Content-Length equals the body length, then compare it by presence.",
    # Deliberate: bridge adds Content-Length when the application returned its whole
    # body in memory (a list), where gunicorn sends Transfer-Encoding: chunked; a
    # client can then tell a complete response from a cut one.
    "Ignore a Content-Length that bridge sent where gunicorn chunked.",
    # The session is signed JSON. Each server made its own random CSRF token, so the
    # cookie is verified with the shared secret, decoded, and compared as JSON with the
    # token replaced; everything else in the session (user_id) is compared.
    "Decode and verify the session cookie; replace its CSRF token.",
    "Replace the server's own port with PORT.",
    "Apply BODY_SCRUBS and the cookie Expires scrub (see their comments).",
    # ASGI has no reason phrase: the server writes the standard one.
    "Compare the status code, not the reason phrase.",
)

TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")

BODY_SCRUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The CSRF token is random per session: in forms, in the page's meta tag, in JSON.
    (re.compile(r'(name="csrf_token" value=")[A-Za-z0-9_-]+(")'), r"\1<csrf>\2"),
    (re.compile(r'(<meta name="csrf-token" content=")[A-Za-z0-9_-]+(")'), r"\1<csrf>\2"),
    (re.compile(r'("csrf_token": ")[A-Za-z0-9_-]+(")'), r"\1<csrf>\2"),
    # How long the report's query took.
    (re.compile(r'(data-elapsed-ms=")[0-9.]+(")'), r"\1<ms>\2"),
    (re.compile(r"(Computed in )[0-9.]+( ms)"), r"\1<ms>\2"),
)
# Rows created during the test carry the second they were written, which differs by a
# few seconds between servers; seeded rows (dated 2024) are still compared exactly.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# A cookie's Expires is computed from the clock at response time (Max-Age is compared).
COOKIE_EXPIRES = re.compile(
    r"(?i)(expires=)[A-Z][a-z]{2}, \d\d[ -][A-Z][a-z]{2}[ -]\d{4} [0-9:]{8} GMT"
)
SESSION_VALUE = re.compile(rf"^{SESSION_COOKIE}=([^;]*)")


def _now_stamp(match: re.Match[str]) -> str:
    return "<now>" if match.group(0) >= TODAY else match.group(0)


def _session_cookie(value: str) -> str:
    match = SESSION_VALUE.match(value)
    if match is None or not match.group(1):
        return value
    session = load_session(match.group(1), SECRET)
    assert session, f"The session cookie does not verify with the shared secret: {value!r}"
    if CSRF_SESSION_KEY in session:
        session[CSRF_SESSION_KEY] = "<csrf>"
    if ISSUED_SESSION_KEY in session:  # the second it was issued, on each server's clock
        session[ISSUED_SESSION_KEY] = "<issued>"
    return f"{SESSION_COOKIE}=<signed {canonical_json(session)}>" + value[match.end() :]


@dataclass(frozen=True)
class Seen:
    """A response reduced to what must match."""

    status: int
    headers: dict[str, list[str]]
    body: str | bytes
    chunked: bool


def normalise(response: httpx.Response, server: Served) -> Seen:
    own = server.base_url.removeprefix("http://")
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        if name in SERVER_HEADERS:
            continue
        if name == "content-length":
            if response.request.method != "HEAD":
                assert int(value) == len(response.content), f"{server.name}: wrong length"
            value = "<checked>"
        if name == "set-cookie":
            value = COOKIE_EXPIRES.sub(r"\1<http-date>", _session_cookie(value))
        headers.setdefault(name, []).append(value.replace(own, "127.0.0.1:PORT"))
    body: str | bytes = response.content
    if len(response.content) > DIGEST_OVER:
        digest = hashlib.sha256(response.content).hexdigest()
        body = f"<{len(response.content)} bytes, sha256 {digest}>"
    else:
        try:
            text = response.content.decode()
        except UnicodeDecodeError:
            pass
        else:
            text = TIMESTAMP.sub(_now_stamp, text.replace(own, "127.0.0.1:PORT"))
            for pattern, replacement in BODY_SCRUBS:
                text = pattern.sub(replacement, text)
            body = text
    chunked = response.headers.get("transfer-encoding", "").lower() == "chunked"
    return Seen(response.status_code, headers, body, chunked)


@dataclass
class Swap:
    """Sends each request to every server, in order, and compares the answers."""

    servers: list[Served]
    clients: list[httpx.Client] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clients = [
            httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT)
            for server in self.servers
        ]

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def send(
        self, method: str, url: str, *, csrf: str | None = None, **kwargs: Any
    ) -> list[httpx.Response]:
        """Send to every server; ``csrf`` puts each server's own token in the "form" or "header"."""
        responses = []
        for index, client in enumerate(self.clients):
            extra = dict(kwargs)
            if csrf == "form":
                extra["data"] = {**kwargs.get("data", {}), "csrf_token": self.tokens[index]}
            elif csrf == "header":
                extra["headers"] = {**kwargs.get("headers", {}), "X-CSRF-Token": self.tokens[index]}
            responses.append(client.request(method, url, **extra))
        return responses

    def same(self, method: str, url: str, *, csrf: str | None = None, **kwargs: Any) -> Seen:
        """Send to every server and assert each bridge answer equals gunicorn's."""
        responses = self.send(method, url, csrf=csrf, **kwargs)
        reference = normalise(responses[0], self.servers[0])
        for server, response in zip(self.servers[1:], responses[1:], strict=True):
            seen = normalise(response, server)
            if reference.chunked and "content-length" in seen.headers:
                del seen.headers["content-length"]  # the deliberate difference, see above
            assert (seen.status, seen.headers, seen.body) == (
                reference.status,
                reference.headers,
                reference.body,
            ), f"{method} {url}: {server.name} differs from {self.servers[0].name}"
        return reference

    def refresh_tokens(self) -> Seen:
        """Fetch each session's CSRF token (the API's way), comparing the answers too."""
        responses = self.send("GET", "/api/session")
        self.tokens = [response.json()["csrf_token"] for response in responses]
        return self.same_as(responses)

    def same_as(self, responses: list[httpx.Response]) -> Seen:
        reference = normalise(responses[0], self.servers[0])
        for server, response in zip(self.servers[1:], responses[1:], strict=True):
            assert normalise(response, server) == reference, f"{server.name} differs"
        return reference

    def log_in(self) -> None:
        self.refresh_tokens()
        seen = self.same(
            "POST", "/login", csrf="form", data={"username": "admin", "password": "admin"}
        )
        assert seen.status == 303, seen
        self.refresh_tokens()


@pytest.fixture
def swap(swap_servers: list[Served]) -> Iterator[Swap]:
    """Fresh clients (so fresh cookie jars) for the module's three servers."""
    compared = Swap(swap_servers)
    try:
        yield compared
    finally:
        compared.close()


def test_the_servers_are_what_they_claim(swap: Swap) -> None:
    names = [r.headers.get("server", "") for r in swap.send("GET", "/health")]
    # bridge's gunicorn worker answers through uvicorn's protocol, under gunicorn's arbiter.
    assert names == ["gunicorn", "uvicorn", "uvicorn", "uvicorn"], names


def test_health_pages_pagination_search_report_and_api(swap: Swap) -> None:
    health = swap.same("GET", "/health")
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})
    assert swap.same("HEAD", "/health").body == ""
    assert swap.same("GET", "/").headers["location"] == ["/items"]
    first = swap.same("GET", "/items")
    assert 'data-page="1" data-pages="4"' in str(first.body)
    last = swap.same("GET", "/items?page=4")
    assert str(last.body).count('class="item"') == 10
    found = swap.same("GET", "/items?q=%231")  # "#1": items 1 and 10-19
    assert 'data-total="11"' in str(found.body)
    assert "No items." in str(swap.same("GET", "/items?q=nothing-like-this").body)
    assert swap.same("GET", "/items/3").status == 200
    assert swap.same("GET", "/items/999").status == 404
    assert swap.same("POST", "/items").status == 405
    report = swap.same("GET", "/report")
    assert 'id="report-table"' in str(report.body)
    listing = json.loads(swap.same("GET", "/api/items?page=2&q=number").body)
    assert (listing["page"], listing["total"], len(listing["items"])) == (2, 40, 10)
    assert json.loads(swap.same("GET", "/api/items/5").body)["id"] == 5
    assert swap.same("GET", "/api/items/999").status == 404


def test_login_sets_a_signed_session_and_logout_ends_it(swap: Swap) -> None:
    login_page = swap.same("GET", "/login")
    assert 'id="login-form"' in str(login_page.body)
    assert login_page.headers["set-cookie"][0].startswith(f"{SESSION_COOKIE}=<signed ")
    swap.refresh_tokens()
    wrong = swap.same("POST", "/login", csrf="form", data={"username": "admin", "password": "nope"})
    assert (wrong.status, 'id="login-error"' in str(wrong.body)) == (200, True)
    ok = swap.same("POST", "/login", csrf="form", data={"username": "admin", "password": "admin"})
    assert ok.status == 303
    assert '"user_id":1' in ok.headers["set-cookie"][0]
    assert json.loads(swap.refresh_tokens().body)["user"] == "admin"
    out = swap.same("POST", "/logout", csrf="form")
    assert out.status == 303
    assert "Max-Age=0" in out.headers["set-cookie"][0]
    assert json.loads(swap.same("GET", "/api/session").body)["user"] is None


def test_csrf_rejections(swap: Swap) -> None:
    form = {"username": "admin", "password": "admin"}
    assert swap.same("POST", "/login", data=form).status == 403  # no token at all
    assert swap.same("POST", "/api/items", json={"title": "t"}).status == 401  # no session
    swap.log_in()
    no_header = swap.same("POST", "/api/items", json={"title": "t", "body": ""})
    assert no_header.status == 403
    assert "X-CSRF-Token" in json.loads(no_header.body)["error"]
    forged = {"title": "forged", "body": "", "csrf_token": "not-the-token"}
    assert swap.same("POST", "/items/new", data=forged).status == 403
    assert swap.same("POST", "/items/1/delete").status == 403


def test_create_edit_and_delete_items(swap: Swap) -> None:
    swap.log_in()
    assert swap.same("GET", "/items/new").status == 200
    invalid = swap.same("POST", "/items/new", csrf="form", data={"title": "", "body": "x"})
    assert invalid.status == 400
    title = "Zoë's café ✓ <b>not bold</b>"
    created = swap.same("POST", "/items/new", csrf="form", data={"title": title, "body": "Body"})
    assert created.status == 303
    location = created.headers["location"][0]
    detail = swap.same("GET", location)
    assert "Zoë&#x27;s café ✓ &lt;b&gt;not bold&lt;/b&gt;" in str(detail.body)
    edited = swap.same(
        "POST", f"{location}/edit", csrf="form", data={"title": "Edited", "body": "Line 1\nLine 2"}
    )
    assert (edited.status, edited.headers["location"]) == (303, [location])
    assert 'id="item-title">Edited<' in str(swap.same("GET", location).body)
    api = swap.same("POST", "/api/items", csrf="header", json={"title": "From the API", "body": ""})
    assert api.status == 201
    assert json.loads(swap.same("GET", api.headers["location"][0]).body)["title"] == "From the API"
    assert swap.same("GET", "/items?q=Edited").status == 200
    deleted = swap.same("POST", f"{location}/delete", csrf="form")
    assert (deleted.status, deleted.headers["location"]) == (303, ["/items"])
    assert swap.same("GET", location).status == 404


def multipart(name: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """Encode one file field once, so every server receives the same bytes."""
    request = httpx.Request("POST", "http://127.0.0.1/", files={"file": (name, data, content_type)})
    return request.read(), request.headers["content-type"]


def test_multi_mib_attachment_round_trip_through_file_wrapper(swap: Swap) -> None:
    swap.log_in()
    created = swap.same(
        "POST", "/items/new", csrf="form", data={"title": "With a file", "body": ""}
    )
    item = created.headers["location"][0]
    data = os.urandom(6 * MIB + 12345)  # past every buffer: bridge's, gunicorn's, werkzeug's
    body, content_type = multipart("rapport d'été.bin", data, "application/octet-stream")
    uploaded = swap.same(
        "POST", f"{item}/attachments", csrf="header", content=body,
        headers={"Content-Type": content_type},
    )  # fmt: skip
    assert (uploaded.status, uploaded.headers["location"]) == (303, [item])
    page = str(swap.same("GET", item).body)
    link = re.search(r'<a href="(/attachments/\d+)">rapport d&#x27;été.bin</a>', page)
    assert link is not None, page
    responses = swap.send("GET", link.group(1))
    for server, response in zip(swap.servers, responses, strict=True):
        assert response.content == data, f"{server.name} sent other bytes back"
    downloaded = swap.same_as(responses)
    disposition = "attachment; filename=\"rapport d'ete.bin\"; filename*=UTF-8''"
    assert downloaded.headers["content-disposition"] == [
        f"{disposition}rapport%20d%27%C3%A9t%C3%A9.bin"
    ]
    assert downloaded.headers["content-type"] == ["application/octet-stream"]
    assert swap.same("GET", "/attachments/99999").status == 404


def test_streamed_csv_export(swap: Swap) -> None:
    swap.log_in()
    swap.same(
        "POST", "/items/new", csrf="form", data={"title": 'Quote " and, comma', "body": "a\nb"}
    )
    export = swap.same("GET", "/export.csv")
    # A generator is not whole in memory, so every server streams it from its first
    # chunk, chunked, with no Content-Length: bridge frames by what the app returned.
    assert export.chunked
    streamed = swap.send("GET", "/export.csv")
    assert all(r.headers.get("transfer-encoding") == "chunked" for r in streamed)
    assert all("content-length" not in r.headers for r in streamed)
    assert export.headers["content-type"] == ["text/csv; charset=utf-8"]
    assert str(export.body).startswith("id,title,body,created_at,owner\r\n")
    assert '"Quote "" and, comma","a\nb",<now>,admin' in str(export.body)
