"""The dashboard's shadow panel in a real browser: a failure's exception, the noise learned,
and the store's use, as a team reads them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.validate import validator

import httpx
import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.shadow import Shadow
from tests.browser import browser_fixture, page_fixture
from tests.servers import uvicorn_in_thread
from tests.shadow.test_trust import json_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

chromium = browser_fixture()
page = page_fixture()


@pytest.fixture
def served() -> Iterator[str]:
    """Under uvicorn in a thread: a noisy route that learns its timestamp, and a route
    whose view raises."""
    app = Bridge(validator(json_app), dashboard_path="/_bridge/")

    @app.route("/stamp", methods=["GET"], shadow=Shadow(noise=True, ready_after=2))
    async def stamp(request: Request) -> Response:
        body = json.dumps({"id": 1, "at": time.time_ns()})
        return Response(body, mimetype="application/json")

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def item(request: Request, item_id: int) -> Response:
        raise KeyError("owner")

    with uvicorn_in_thread(app, log_level="critical") as base:
        with httpx.Client(base_url=base, timeout=10) as http:
            for done, path in enumerate(("/stamp", "/stamp", "/items/1", "/items/2"), 1):
                assert http.get(path).status_code == 200
                for _ in range(500):  # one run at a time, so the kinds come in order
                    if sum(s.matched + s.failed for s in app.shadows.routes) == done:
                        break
                    threading.Event().wait(0.01)
        yield base


@pytest.mark.browser
def test_the_panel_shows_a_failures_exception_and_the_noise_learned(
    served: str, page: Page
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served + "/_bridge/")
    page.wait_for_selector("body[data-loaded='1']")
    stamp = page.locator("#shadow-routes tr[data-route='/stamp']")
    expect(stamp.locator(".verdict")).to_have_text("ready to switch")
    failure = page.locator("#shadow-mismatches details.failure")
    expect(failure).to_have_count(1)
    expect(failure.locator("summary")).to_contain_text("2\u00d7 KeyError: the shadow view failed")
    failure.locator("summary").click()
    expect(failure.locator("p.err")).to_have_text("The view raised KeyError: 'owner'")
    note = page.locator("#shadow-mismatches p.note[data-route='/stamp']")
    expect(note).to_contain_text("not counted: body $.at")
    expect(note).to_contain_text("reports kept: 0 of 64 KiB")
    assert errors == []
