"""Each step of docs/migration.md, proved in process: the migrated routes answer, the
legacy pages still do, and both share the session, the database and the request log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from werkzeug.test import Client

from bridge import Bridge, Request
from sample_wsgi_app import SESSION_COOKIE, SampleApp, dump_session, load_session, queries
from sample_wsgi_app.access_log import RequestLog
from sample_wsgi_app.async_session import current_user, read_session
from sample_wsgi_app.live import ItemFeed
from tests.migration.conftest import SECRET, bridge, client, login


def refuse_legacy(sample: SampleApp, endpoint: str) -> None:
    """Make the legacy view fail, so a passing request proves the migrated one answered."""

    def legacy_view(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"The legacy view {endpoint} ran; the migrated route should have.")

    sample.views[endpoint] = legacy_view


# -- step 1: swap the entrypoint ---------------------------------------------------------


def test_step1_asgi_entrypoint_is_bridge_around_the_legacy_app() -> None:
    from sample_wsgi_app import app
    from sample_wsgi_app.asgi import application

    assert isinstance(application, Bridge)
    assert application.wsgi_app is app
    assert application.routes == []


def test_step1_bridge_serves_the_legacy_pages_unchanged(sample: SampleApp) -> None:
    async def main() -> None:
        served = Bridge(sample)
        try:
            async with client(served) as http:
                await login(http)
                page = await http.get("/items")
                assert page.status_code == 200
                assert 'data-user="admin"' in page.text
        finally:
            served.pool.shutdown()

    asyncio.run(main())


# -- step 2: one read-only view, async ------------------------------------------------


def test_step2_async_item_view_answers_as_the_legacy_view_did(
    sample: SampleApp, modern: RequestLog
) -> None:
    queries.add_attachment(
        sample.db,
        item_id=3,
        filename="notes.txt",
        content_type="text/plain",
        size=5,
        path="attachments/3/x",
    )
    legacy = Client(sample)
    expected = {}
    for item_id in (1, 3, 999):
        response = legacy.get(f"/api/items/{item_id}")
        expected[item_id] = (response.status_code, response.get_json())
        response.close()
    refuse_legacy(sample, "api_item_detail")

    async def main() -> None:
        async with client(modern) as http:
            for item_id, (status, body) in expected.items():
                response = await http.get(f"/api/items/{item_id}")
                assert (response.status_code, response.json()) == (status, body)
        assert expected[3][1]["attachments"][0]["filename"] == "notes.txt"
        assert expected[999][0] == 404

    asyncio.run(main())


def test_step2_queries_of_one_request_share_one_thread_and_connection(
    sample: SampleApp, modern: RequestLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    for name in ("get_item", "list_attachments"):
        original = getattr(queries, name)

        def recorded(db: Any, item_id: int, _name: str = name, _original: Any = original) -> Any:
            calls.append((_name, threading.get_ident(), id(db.connection())))
            return _original(db, item_id)

        monkeypatch.setattr(queries, name, recorded)

    async def main() -> None:
        async with client(modern) as http:
            for item_id in range(1, 21):
                assert (await http.get(f"/api/items/{item_id}")).status_code == 200

    asyncio.run(main())
    assert len(calls) == 40
    loop_threads = {threading.get_ident()}
    for first, second in zip(calls[::2], calls[1::2], strict=True):
        assert (first[0], second[0]) == ("get_item", "list_attachments")
        assert first[1:] == second[1:], "one request's queries ran on two threads"
        assert first[1] not in loop_threads, "a query ran on the event loop"
    # Each request's thread is gone afterwards; its connection is closed with it, so
    # connections do not pile up however many requests came.
    connections = sample.db._connections
    assert sum(1 for thread, _ in connections if not thread.is_alive()) <= 1


# -- step 3: a view that uses the session -----------------------------------------------


def test_step3_view_in_legacy_middleware_shares_the_session_both_ways(
    sample: SampleApp, modern: RequestLog
) -> None:
    refuse_legacy(sample, "api_session")

    async def main() -> None:
        async with client(modern) as http:
            first = await http.get("/api/session")
            assert first.status_code == 200
            body = first.json()
            assert body["user"] is None
            # The async view created the CSRF token; SessionMiddleware saved it.
            assert load_session(http.cookies[SESSION_COOKIE], SECRET) == {
                "csrf_token": body["csrf_token"],
                "issued_at": ANY,
            }
            # The legacy login form accepts the token the async view wrote.
            form = {"username": "admin", "password": "admin", "csrf_token": body["csrf_token"]}
            assert (await http.post("/login", data=form)).status_code == 303
            # ... and the async view sees the legacy login.
            after = (await http.get("/api/session")).json()
            assert after["user"] == "admin"
            assert after["csrf_token"] != body["csrf_token"]  # rotated at login

    asyncio.run(main())


def test_step3_cookie_view_sees_the_legacy_login(sample: SampleApp, modern: RequestLog) -> None:
    async def main() -> None:
        async with client(modern) as http:
            assert (await http.get("/api/me")).json() == {"user": None}
            await login(http)
            assert (await http.get("/api/me")).json() == {"user": "admin"}
        async with client(modern) as stranger:
            forged = dump_session({"user_id": 1}, "another-secret")
            cookie = {"Cookie": f"{SESSION_COOKIE}={forged}"}
            assert (await stranger.get("/api/me", headers=cookie)).json() == {"user": None}

    asyncio.run(main())


def test_step3_cookie_view_writes_the_session_the_legacy_pages_read(
    sample: SampleApp, modern: RequestLog
) -> None:
    async def main() -> None:
        async with client(modern) as http:
            await login(http)
            token = load_session(http.cookies[SESSION_COOKIE], SECRET)["csrf_token"]
            # No CSRF middleware runs out here: the view checks the token itself.
            refused = await http.post("/api/logout", headers={"X-CSRF-Token": "wrong"})
            assert refused.status_code == 403
            assert 'data-user="admin"' in (await http.get("/items")).text
            done = await http.post("/api/logout", headers={"X-CSRF-Token": token})
            assert done.status_code == 200
            assert "Max-Age=0" in done.headers["set-cookie"]
            assert SESSION_COOKIE not in http.cookies
            # The legacy page sees the session the async view ended.
            assert 'data-user=""' in (await http.get("/items")).text

    asyncio.run(main())


def test_step3_middleware_way_holds_a_thread_and_cookie_way_does_not(sample: SampleApp) -> None:
    """The trade-off the guide explains, measured on bridge's pool during each view."""
    served = Bridge(sample, max_threads=4)
    busy: dict[str, int] = {}

    @served.route("/held", methods=["GET"], middleware=sample.wrap)
    async def held(request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        busy["middleware"] = served.pool.in_flight
        return {"user": request.environ["sample.user"]}

    @served.route("/free", methods=["GET"])
    async def free(request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        busy["cookie"] = served.pool.in_flight
        user = await current_user(read_session(request, SECRET), sample.db)
        return {"user": user.username if user else None}

    async def main() -> None:
        try:
            async with client(served) as http:
                assert (await http.get("/held")).status_code == 200
                assert (await http.get("/free")).json() == {"user": None}
        finally:
            served.pool.shutdown()

    asyncio.run(main())
    assert busy == {"middleware": 1, "cookie": 0}


# -- step 4: the live feed ------------------------------------------------------------


def test_step4_legacy_creates_reach_feed_subscribers_on_the_loop(
    sample: SampleApp, modern: RequestLog, feed: ItemFeed
) -> None:
    async def main() -> None:
        async with client(modern) as http, feed.subscribe() as queue:
            await login(http)
            token = load_session(http.cookies[SESSION_COOKIE], SECRET)["csrf_token"]
            form = {"title": "From the form", "body": "", "csrf_token": token}
            created = await http.post("/items/new", data=form)
            assert created.status_code == 303
            event = await asyncio.wait_for(queue.get(), 5)
            assert event["type"] == "item"
            assert event["item"]["title"] == "From the form"
            assert created.headers["location"] == event["item"]["url"]

            api = await http.post(
                "/api/items", json={"title": "From the API"}, headers={"X-CSRF-Token": token}
            )
            assert api.status_code == 201
            event = await asyncio.wait_for(queue.get(), 5)
            assert event["item"]["id"] == api.json()["id"]

            # A refused create publishes nothing.
            bad = await http.post("/items/new", data={"title": "", "csrf_token": token})
            assert bad.status_code == 400
            assert queue.empty()

    asyncio.run(main())


def test_step4_websocket_sends_ready_then_each_new_item(modern: RequestLog, feed: ItemFeed) -> None:
    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": "/ws/items",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "scheme": "ws",
            "subprotocols": [],
        }
        inbox.put_nowait({"type": "websocket.connect"})
        serving = asyncio.ensure_future(modern(scope, inbox.get, outbox.put))
        assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "websocket.accept"
        assert json.loads((await outbox.get())["text"]) == {"type": "ready"}
        assert feed.subscribers == 1
        await feed.publish({"type": "item", "item": {"id": 41}})
        message = await asyncio.wait_for(outbox.get(), 5)
        assert json.loads(message["text"]) == {"type": "item", "item": {"id": 41}}
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await asyncio.wait_for(serving, 5)
        assert feed.subscribers == 0

    asyncio.run(main())


def test_step4_feed_drops_the_oldest_event_for_a_reader_that_lags() -> None:
    async def main() -> None:
        feed = ItemFeed(backlog=3)
        async with feed.subscribe() as queue:
            for number in range(5):
                assert await feed.publish({"n": number}) == 1
            assert [queue.get_nowait()["n"] for _ in range(3)] == [2, 3, 4]

    asyncio.run(main())


def test_step4_live_page_shows_items_and_the_user_from_the_cookie(modern: RequestLog) -> None:
    async def main() -> None:
        async with client(modern) as http:
            anonymous = await http.get("/live")
            assert anonymous.status_code == 200
            assert 'id="live-items"' in anonymous.text
            assert anonymous.text.count('class="item"') == 10
            assert 'data-user=""' in anonymous.text
            await login(http)
            assert 'data-user="admin"' in (await http.get("/live")).text

    asyncio.run(main())


# -- step 5: the request log as ASGI middleware -------------------------------------------


def test_step5_one_log_line_per_request_for_async_and_legacy_routes(
    modern: RequestLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sample_wsgi_app")

    async def main() -> None:
        async with client(modern) as http:
            await http.get("/api/items/2")
            await http.get("/items?page=2")
            await http.get("/nowhere")

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if " bytes " in r.getMessage()]
    assert len(lines) == 3, lines
    assert re.fullmatch(r"GET /api/items/2 200 \d+ bytes [\d.]+ ms", lines[0])
    assert re.fullmatch(r"GET /items\?page=2 200 \d+ bytes [\d.]+ ms", lines[1])
    assert re.fullmatch(r"GET /nowhere 404 \d+ bytes [\d.]+ ms", lines[2])


def test_dashboard_shows_the_migrated_routes_to_loopback(modern: RequestLog) -> None:
    async def main() -> None:
        async with client(modern) as http:
            await http.get("/api/items/1")
            await http.get("/items")
            local = {"Host": "localhost"}  # bridge's pages answer to loopback names only
            metrics = await http.get("/_bridge/metrics", headers=local)
            assert metrics.status_code == 200
            assert 'route="/api/items/<int:item_id>",kind="async"' in metrics.text
            assert (await http.get("/_bridge/", headers=local)).status_code == 200

    asyncio.run(main())


def test_module_application_is_the_migrated_app(tmp_path: Path) -> None:
    from sample_wsgi_app.modern import application

    served = bridge(application)
    assert served.max_threads == 8
    rules = {route.rule for route in served.routes}
    assert {"/api/items/<int:item_id>", "/api/session", "/api/me", "/events/items"} <= rules
    assert [route.rule for route in served.websocket_routes] == ["/ws/items"]
