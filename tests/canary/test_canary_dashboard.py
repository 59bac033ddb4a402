"""The dashboard's canary panel: its data, and its controls for holders of the token only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import Bridge, Canary
from tests.asgi import Client, http_scope
from tests.browser import fresh_page, launched, skip_without_chromium
from tests.canary.test_canary import build
from tests.servers import uvicorn_in_thread

TOKEN = "s3cret-token-0123456789"
RULE = "/items/<int:item_id>"
REMOTE = ("203.0.113.5", 4000)


def app_with(**options: Any) -> Bridge:
    return build(Canary(share=0.2, key="cookie:sid"), dashboard_path="/_bridge/", **options)


def call(
    app: Bridge,
    path: str,
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    **scope: Any,
) -> Client:
    client = Client([body])
    asyncio.run(client.run(app, http_scope(path, method=method, headers=headers or [], **scope)))
    return client


def change(data: dict[str, Any] | bytes) -> bytes:
    return data if isinstance(data, bytes) else json.dumps(data).encode()


def signed_in(app: Bridge) -> tuple[list[tuple[bytes, bytes]], str]:
    """The cookie headers of a browser that opened the page with the token, and its CSRF."""
    exchanged = call(app, "/_bridge/", query_string=f"token={TOKEN}".encode(), client=REMOTE)
    assert exchanged.status == 303
    cookie = exchanged.headers[b"set-cookie"].split(b";")[0]
    headers = [(b"cookie", cookie), (b"host", b"127.0.0.1:8000")]
    data = json.loads(call(app, "/_bridge/data.json", headers=headers, client=REMOTE).body)
    assert data["controls"]["allowed"] is True
    csrf: str = data["controls"]["csrf"]
    return headers, csrf


def test_the_data_shows_each_canary_and_no_controls_without_a_token() -> None:
    app = app_with()
    call(app, "/items/1", headers=[(b"cookie", b"sid=a")])
    data = json.loads(call(app, "/_bridge/data.json").body)
    [canary] = data["canary"]
    assert (canary["rule"], canary["state"], canary["share"], canary["key"]) == (
        RULE, "running", 0.2, "cookie:sid",
    )  # fmt: skip
    assert sum(arm["requests"] for arm in canary["arms"].values()) == 1
    assert data["controls"] == {"allowed": False, "csrf": None}


def test_without_a_dashboard_token_nobody_may_change_a_canary() -> None:
    app = app_with()
    answer = call(
        app, "/_bridge/canary", method="POST", body=change({"rule": RULE, "action": "rollback"})
    )
    assert answer.status == 403
    assert b"the dashboard's controls need dashboard_token" in answer.body
    assert app.canary(RULE).state == "running"


def test_a_bearer_holder_changes_a_canary() -> None:
    app = app_with(dashboard_token=TOKEN)
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    answer = call(app, "/_bridge/canary", method="POST", headers=bearer, client=REMOTE,
                  body=change({"rule": RULE, "action": "set", "share": 0.5}))  # fmt: skip
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"rule": RULE, "state": "running", "share": 0.5}
    assert app.canary(RULE).share == 0.5
    for action, state in (("rollback", "rolled back"), ("promote", "promoted")):
        answer = call(app, "/_bridge/canary", method="POST", headers=bearer, client=REMOTE,
                      body=change({"rule": RULE, "action": action}))  # fmt: skip
        assert json.loads(answer.body)["state"] == state == app.canary(RULE).state


def test_the_cookie_needs_the_pages_csrf_token_and_its_origin() -> None:
    app = app_with(dashboard_token=TOKEN)
    headers, csrf = signed_in(app)
    body = change({"rule": RULE, "action": "rollback"})
    forged = call(app, "/_bridge/canary", method="POST", headers=headers, body=body, client=REMOTE)
    assert forged.status == 403 and b"X-Bridge-CSRF" in forged.body
    wrong = [*headers, (b"x-bridge-csrf", b"0" * 64)]
    assert call(app, "/_bridge/canary", method="POST", headers=wrong, body=body).status == 403
    elsewhere = [*headers, (b"x-bridge-csrf", csrf.encode()), (b"origin", b"https://evil.test")]
    refused = call(app, "/_bridge/canary", method="POST", headers=elsewhere, body=body)
    assert refused.status == 403 and b'Origin "https://evil.test"' in refused.body
    assert app.canary(RULE).state == "running"
    good = [*headers, (b"x-bridge-csrf", csrf.encode()), (b"origin", b"http://127.0.0.1:8000")]
    assert call(app, "/_bridge/canary", method="POST", headers=good, body=body).status == 200
    assert app.canary(RULE).state == "rolled back"


@pytest.mark.parametrize(
    ("body", "status", "sentence"),
    [
        (b"not json", 400, b"Send JSON such as"),
        (change({"rule": RULE}), 400, b"Send JSON such as"),
        (change({"rule": "/nope", "action": "rollback"}), 400, b'"/nope" is not the rule of'),
        (change({"rule": RULE, "action": "pause"}), 400, b'action "pause" must be "set"'),
        (change({"rule": RULE, "action": "set", "share": 7}), 400, b"not 7"),
        (change({"rule": RULE, "action": "set"}), 400, b"not None"),
        (b"{" + b" " * 5000 + b"}", 413, b"this body is larger"),
    ],
)
def test_a_bad_change_gets_a_sentence_and_changes_nothing(
    body: bytes, status: int, sentence: bytes
) -> None:
    app = app_with(dashboard_token=TOKEN)
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    answer = call(app, "/_bridge/canary", method="POST", headers=bearer, body=body)
    assert (answer.status, sentence in answer.body) == (status, True), answer.body
    assert (app.canary(RULE).state, app.canary(RULE).share) == ("running", 0.2)


def test_the_control_path_takes_post_only() -> None:
    app = app_with(dashboard_token=TOKEN)
    answer = call(app, "/_bridge/canary")
    assert answer.status == 405 and answer.headers[b"allow"] == b"POST"


@pytest.fixture
def served() -> Iterator[tuple[str, Bridge]]:
    """The canary app under uvicorn in a thread, with a dashboard token."""
    app = app_with(dashboard_token=TOKEN)
    with uvicorn_in_thread(app) as base:
        yield base, app


@pytest.mark.browser
def test_the_panel_sets_and_rolls_back_in_headless_chromium(
    served: tuple[str, Bridge], tmp_path: Path
) -> None:
    skip_without_chromium()
    base, app = served
    with launched() as browser, fresh_page(browser) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base + f"/_bridge/?token={TOKEN}")
        page.wait_for_selector("#canary-panel:not([hidden]) tr[data-route]", timeout=10_000)
        row = page.locator(f'#canary-routes tr[data-route="{RULE}"]')
        assert row.locator("td.state").inner_text() == "running"
        row.locator("input").fill("35")
        row.locator('button[data-action="set"]').click()
        row.locator("td.share", has_text="35 %").wait_for()
        assert app.canary(RULE).share == 0.35
        row.locator('button[data-action="rollback"]').click()
        row.locator("td.state", has_text="rolled back").wait_for()
        assert app.canary(RULE).state == "rolled back"
        assert errors == []
