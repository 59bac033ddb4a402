"""The shadow step of docs/migration.md: the async item view runs in the shadow of the
legacy one on the sample application, and bridge says whether it answers the same."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.shadow import Shadow
from sample_wsgi_app import SampleApp, queries, templates
from sample_wsgi_app.api import attachment_json, item_json, json_error, json_response
from sample_wsgi_app.async_session import current_user, read_session
from sample_wsgi_app.sessions import CSRF_SESSION_KEY
from tests.asgi import Client, http_scope

from .conftest import login

ITEM_IDS = (1, 2, 3, 999)  # 999 does not exist: both answer 404


def item_view(sample: SampleApp, change: Any = None) -> Any:
    """The async item view of step 2, optionally changed by ``change(data)``."""
    db = sample.db

    async def api_item_detail(request: Request, item_id: int) -> Response:
        item = await sync_to_async(queries.get_item)(db, item_id)
        if item is None:
            return json_error(404, NotFound.description)
        attachments = await sync_to_async(queries.list_attachments)(db, item_id)
        data = {**item_json(item), "attachments": [attachment_json(a) for a in attachments]}
        return json_response(change(data) if change else data)

    return api_item_detail


def shadowed(sample: SampleApp, view: Any, **options: Any) -> Bridge:
    bridge = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    shadow = Shadow(ready_after=len(ITEM_IDS), **options)
    bridge.route("/api/items/<int:item_id>", methods=["GET"], shadow=shadow)(view)
    return bridge


async def get_all(bridge: Bridge, paths: list[str]) -> list[list[Any]]:
    sent = []
    for path in paths:
        client = Client()
        await client.run(bridge, http_scope(path))
        sent.append(client.sent)
    await bridge.shadows.idle()
    return sent


def test_step2_shadow_an_identical_view_matches_and_is_ready_to_switch(sample: SampleApp) -> None:
    queries.add_attachment(
        sample.db, item_id=3, filename="notes.txt", content_type="text/plain", size=5,
        path="attachments/3/x",
    )  # fmt: skip
    bridge = shadowed(sample, item_view(sample))
    asyncio.run(get_all(bridge, [f"/api/items/{i}" for i in ITEM_IDS]))
    (stats,) = bridge.shadows.routes
    assert (stats.matched, stats.mismatched, stats.failed, stats.skipped) == (4, 0, 0, 0)
    assert stats.ready and stats.mismatches == []
    bridge.pool.shutdown()


def test_step2_shadow_a_view_that_differs_in_one_field_shows_that_field(
    sample: SampleApp,
) -> None:
    # A typical slip in a rewrite: the API's URL built from the wrong prefix.
    def wrong_url(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "url": "/api" + data["url"]}

    bridge = shadowed(sample, item_view(sample, wrong_url), show_bodies=True)
    asyncio.run(get_all(bridge, [f"/api/items/{i}" for i in ITEM_IDS]))
    (stats,) = bridge.shadows.routes
    assert (stats.matched, stats.mismatched, stats.failed, stats.skipped) == (1, 3, 0, 0)
    # One kind of difference, three times, shown by its latest example (shadow runs
    # finish in any order: any of the three).
    (kind,) = stats.snapshot()["kinds"]
    assert (kind["kind"], kind["count"]) == ("body $.url", 3)
    assert kind["latest"]["differences"] in [
        [{"where": "body $.url", "legacy": f'"/items/{i}"', "shadow": f'"/api/items/{i}"'}]
        for i in (1, 2, 3)
    ]
    assert not stats.ready
    bridge.pool.shutdown()


def test_step2_shadow_a_normaliser_masks_what_may_differ(sample: SampleApp) -> None:
    def restamped(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "created_at": "2031-01-01 00:00:00"}

    def no_timestamps(body: Any) -> Any:
        return {**body, "created_at": None} if isinstance(body, dict) else body

    bridge = shadowed(sample, item_view(sample, restamped), normalise=no_timestamps)
    asyncio.run(get_all(bridge, [f"/api/items/{i}" for i in ITEM_IDS]))
    (stats,) = bridge.shadows.routes
    assert (stats.matched, stats.mismatched) == (4, 0)
    bridge.pool.shutdown()


def test_step2_shadow_leaves_every_response_byte_identical(sample: SampleApp) -> None:
    paths = [
        *(f"/api/items/{i}" for i in ITEM_IDS),
        "/api/items",  # another rule: the legacy app alone
        "/items/1",
        "/health",
    ]
    off = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    on = shadowed(sample, item_view(sample, lambda data: {**data, "title": "changed"}))
    assert asyncio.run(get_all(on, paths)) == asyncio.run(get_all(off, paths))
    assert on.shadows.routes[0].mismatched == 3
    on.pool.shutdown()
    off.pool.shutdown()


def page_view(sample: SampleApp, fresh_token: bool = False) -> Any:
    """The HTML item page as an async view reading the session cookie (step 3b), with
    the page's CSRF token from the session, or (``fresh_token``) a new one each time."""
    db, secret = sample.db, sample.settings.secret_key

    async def item_page(request: Request, item_id: int) -> Response:
        session = read_session(request, secret)
        user = await current_user(session, db)
        item = await sync_to_async(queries.get_item)(db, item_id)
        assert item is not None
        attachments = await sync_to_async(queries.list_attachments)(db, item_id)
        token = session.get(CSRF_SESSION_KEY) if user is not None else None
        if fresh_token and user is not None:
            token = secrets.token_urlsafe(16)
        body = templates.item_detail(item, attachments, user=user, csrf_token=token)
        html = templates.page(title=item.title, body=body, user=user, csrf_token=token)
        return Response(html, mimetype="text/html")

    return item_page


def mask_csrf(body: Any) -> Any:
    return CSRF_IN_PAGE.sub(r"\1[token]\2", body) if isinstance(body, str) else body


CSRF_IN_PAGE = re.compile(r'((?:name="csrf_token" value|name="csrf-token" content)=")[^"]*(")')


async def browse_logged_in(bridge: Bridge) -> None:
    transport = httpx.ASGITransport(app=bridge, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/items/1")).status_code == 200  # anonymous
        await login(http)
        for item_id in (1, 2, 1):
            page = await http.get(f"/items/{item_id}")
            assert page.status_code == 200 and 'data-user="admin"' in page.text
    await bridge.shadows.idle()


def test_step2_shadow_a_page_view_sees_the_session_of_the_legacy_login(
    sample: SampleApp,
) -> None:
    bridge = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    bridge.route("/items/<int:item_id>", methods=["GET"], shadow=True)(page_view(sample))
    asyncio.run(browse_logged_in(bridge))
    (stats,) = bridge.shadows.routes
    assert (stats.matched, stats.mismatched, stats.failed) == (4, 0, 0), stats.mismatches
    bridge.pool.shutdown()


def test_step2_shadow_a_normaliser_masks_the_csrf_token_of_a_page(sample: SampleApp) -> None:
    bridge = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    view = page_view(sample, fresh_token=True)
    shown = Shadow(show_bodies=True)  # a test database: its pages may be shown
    bridge.route("/items/<int:item_id>", methods=["GET"], shadow=shown)(view)
    masked = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    masked.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(normalise=mask_csrf))(view)
    asyncio.run(browse_logged_in(bridge))
    asyncio.run(browse_logged_in(masked))
    (plain,) = bridge.shadows.routes
    # Unmasked, the logged-in pages differ where the token is, and only there.
    assert (plain.matched, plain.mismatched) == (1, 3)
    (report,) = plain.mismatches  # three mismatches, one kind: "body (text)"
    assert plain.snapshot()["kinds"][0]["count"] == 3
    (difference,) = report["differences"]
    assert difference["where"].startswith("body line ")
    assert "csrf-token" in difference["legacy"]
    (stats,) = masked.shadows.routes
    assert (stats.matched, stats.mismatched) == (4, 0)
    bridge.pool.shutdown()
    masked.pool.shutdown()
