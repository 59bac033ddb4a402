"""In headless Chromium: the live page open in one browser context shows an item created
through the legacy form in another, over the websocket or the event stream, while the
legacy pages keep working in both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import browser_fixture, fresh_page
from tests.migration.conftest import live_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.live, pytest.mark.browser]

chromium = browser_fixture()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("browser-live")
    with live_server("uvicorn", data / "data", log=data / "server.log") as base:
        yield base


@pytest.mark.parametrize(("via", "label"), [("", "websocket"), ("sse", "server-sent events")])
def test_item_created_in_one_context_appears_live_in_another(
    chromium: Browser, base_url: str, via: str, label: str
) -> None:
    title = f"Made elsewhere via {label}"
    with (
        fresh_page(chromium, base_url=base_url) as watcher,
        fresh_page(chromium, base_url=base_url) as author,
    ):
        watcher.goto(f"/live?via={via}" if via else "/live")
        state = watcher.locator("#live-state")
        state.and_(watcher.locator("[data-state=connected]")).wait_for()
        assert state.inner_text() == f"Live ({label})"
        before = watcher.locator("#live-items li.item").count()

        # The author uses only legacy pages: log in, create an item with the form.
        author.goto("/login")
        author.fill("input[name=username]", "admin")
        author.fill("input[name=password]", "admin")
        author.click("#login-button")
        author.wait_for_url("**/items")
        author.goto("/items/new")
        author.fill("input[name=title]", title)
        author.fill("textarea[name=body]", "Created by the legacy form.")
        author.click("#save-button")
        author.wait_for_url(re.compile(r".*/items/\d+$"))
        item_id = author.url.rsplit("/", 1)[1]
        assert author.locator("#item-title").inner_text() == title

        # The watcher's page shows it without a reload, at the top.
        row = watcher.locator(f"#live-items li.item[data-item-id='{item_id}']")
        row.wait_for()
        assert row.locator("a").inner_text() == title
        assert watcher.locator("#live-items li.item").count() == before + 1
        assert watcher.locator("#live-items li.item").first.get_attribute("data-item-id") == item_id

        # Legacy pages keep answering in both contexts while the feed is open.
        assert author.goto("/items").status == 200
        assert author.locator(f"li.item[data-item-id='{item_id}']").count() == 1
        response = watcher.request.get(f"{base_url}/items/{item_id}")
        assert response.status == 200
        assert title in response.text()
        response.dispose()
