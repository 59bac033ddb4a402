"""The migrated sample app on real servers: an item created through a legacy view reaches
a websocket and an event-stream client, and the async and legacy routes answer beside them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from sample_wsgi_app import SESSION_COOKIE, load_session
from tests.migration.conftest import SECRET, SERVERS, live_server, login

pytestmark = pytest.mark.live


async def next_event(lines: AsyncIterator[str]) -> tuple[str, str]:
    """The next server-sent event as (event, data), skipping comments."""
    event, data = "message", ""
    async for line in lines:
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and data:
            return event, data
    raise AssertionError("The event stream ended.")


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_legacy_create_reaches_websocket_and_event_stream(server: str, tmp_path: Path) -> None:
    with live_server(server, tmp_path / "data", log=tmp_path / "server.log") as base:
        asyncio.run(exercise(base))


async def exercise(base: str) -> None:
    ws_url = base.replace("http://", "ws://") + "/ws/items"
    timeout = httpx.Timeout(10.0)
    async with (
        httpx.AsyncClient(base_url=base, timeout=timeout) as http,
        httpx.AsyncClient(base_url=base, timeout=timeout) as listener,
        websockets.connect(ws_url, open_timeout=10) as ws,
        listener.stream("GET", "/events/items") as stream,
    ):
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "ready"}
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await asyncio.wait_for(next_event(lines), 10) == ("ready", "{}")

        await login(http)
        assert (await http.get("/api/me")).json() == {"user": "admin"}
        token = load_session(http.cookies[SESSION_COOKIE], SECRET)["csrf_token"]
        created = await http.post(
            "/api/items", json={"title": "Live one"}, headers={"X-CSRF-Token": token}
        )
        assert created.status_code == 201
        item = created.json()

        pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert pushed == {"type": "item", "item": item}
        event, data = await asyncio.wait_for(next_event(lines), 10)
        assert (event, json.loads(data)) == ("item", pushed)

        # The async view and the legacy page both answer while the feeds are open.
        detail = await http.get(f"/api/items/{item['id']}")
        assert detail.json()["title"] == "Live one"
        page = await http.get("/items")
        assert page.status_code == 200
        assert "Live one" in page.text
