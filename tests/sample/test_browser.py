"""Headless Chromium uses the sample app served through bridge, the way a person would.

Set ``BRIDGE_UPDATE_SCREENSHOT=1`` to also write the items page to ``docs/sample-app.png``,
the picture the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import browser_fixture, page_fixture
from tests.servers import ROOT

from .conftest import Served

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.live, pytest.mark.browser]

SCREENSHOT = ROOT / "docs" / "sample-app.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

chromium = browser_fixture()
page = page_fixture()


def log_in(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    page.fill("#login-form #username", "admin")
    page.fill("#login-form #password", "admin")
    page.click("#login-button")
    page.wait_for_url(f"{base_url}/items")
    expect(page.locator("#nav")).to_have_attribute("data-user", "admin")


def test_log_in_create_upload_download_and_log_out(
    page: Page, bridge_server: Served, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    base = bridge_server.base_url
    log_in(page, base)

    page.click("#nav-new-item")
    page.fill("#title", "Quarterly figures ✓")
    page.fill("#body", "Typed into a real browser.")
    page.click("#save-button")
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/items/\d+$"))
    expect(page.locator("#item-title")).to_have_text("Quarterly figures ✓")
    item_id = page.locator("#item").get_attribute("data-item-id")

    # Random bytes, so a download that is cut, padded or re-encoded cannot match.
    upload = tmp_path / "figures é.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    upload.write_bytes(data)
    page.set_input_files("#upload-form #upload-input", str(upload))
    page.click("#upload-button")
    page.wait_for_url(f"{base}/items/{item_id}")
    link = page.locator("#attachment-list li.attachment a", has_text=upload.name)
    expect(link).to_have_count(1)

    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename == upload.name
    assert Path(download.path()).read_bytes() == data

    page.click("#nav-items")
    # Narrow enough that the picture in the README shows the page, not the margins.
    page.set_viewport_size({"width": 900, "height": 540})
    first = page.locator("#item-list li[data-item-id]").first
    expect(first).to_have_attribute("data-item-id", str(item_id))
    expect(page.locator("#pagination")).to_have_attribute("data-page", "1")
    shot = page.screenshot(path=str(tmp_path / "items.png"), full_page=False)
    assert shot.startswith(PNG_SIGNATURE)
    if os.environ.get("BRIDGE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "items.png", SCREENSHOT)

    page.click("#logout-button")
    page.wait_for_url(f"{base}/items")
    expect(page.locator("#nav")).to_have_attribute("data-user", "")
    page.goto(f"{base}/items/new")
    expect(page.locator("#login-form")).to_be_visible()


def test_a_wrong_password_is_refused(page: Page, bridge_server: Served) -> None:
    from playwright.sync_api import expect

    page.goto(f"{bridge_server.base_url}/login")
    page.fill("#username", "admin")
    page.fill("#password", "not-the-password")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#nav")).to_have_attribute("data-user", "")
