"""Headless system Chromium for browser tests, driven through Playwright's Python API.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (the
distribution package, which ``scripts/test`` installs when it runs as root), and a
test that needs it is skipped, with the reason, when it is missing::

    from tests.browser import browser_fixture, page_fixture

    chromium = browser_fixture()   # one browser per module
    page = page_fixture()          # a fresh context (cookies, storage) per test
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")

# --no-sandbox: tests often run as root in a container, where Chromium's sandbox
# refuses to start. The rest keep a test run quiet and offline: no GPU process, no
# QUIC probing, no first-run, update, sync or background requests to the internet.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Milliseconds Playwright waits for a page or an element by default: generous, since
# the machine running the tests may be busy, yet far below the pytest timeout.
DEFAULT_TIMEOUT_MS = 15_000


def skip_without_chromium() -> None:
    """Skip the calling test, saying how to get Chromium, when it is not installed."""
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} is missing; install the distribution package "
            "(apt-get install chromium), as scripts/test does when run as root."
        )


@contextlib.contextmanager
def launched() -> Iterator[Browser]:
    """Launch headless system Chromium, and close it and Playwright's driver afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def fresh_page(browser: Browser, **context_options: Any) -> Iterator[Page]:
    """Open a page in a new browser context: no cookies or storage from other tests."""
    context = browser.new_context(accept_downloads=True, **context_options)
    try:
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        yield context.new_page()
    finally:
        context.close()


def browser_fixture(
    scope: Literal["session", "package", "module", "class", "function"] = "module",
) -> Callable[..., Iterator[Browser]]:
    """Make a fixture that yields a launched Chromium, or skips when it is absent."""

    @pytest.fixture(scope=scope)
    def chromium() -> Iterator[Browser]:
        skip_without_chromium()
        with launched() as browser:
            yield browser

    return chromium


def page_fixture(browser_fixture_name: str = "chromium") -> Callable[..., Iterator[Page]]:
    """Make a fixture that yields a page in a fresh context of the named browser fixture."""

    @pytest.fixture
    def page(request: pytest.FixtureRequest) -> Iterator[Page]:
        browser: Browser = request.getfixturevalue(browser_fixture_name)
        with fresh_page(browser) as opened:
            yield opened

    return page
