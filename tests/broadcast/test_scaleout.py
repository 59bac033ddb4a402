"""Live events across workers and hosts: two ``bridge serve --workers 2`` instances share
one Redis and one database; every client on every worker gets every item, across a
Redis restart, and an SSE client resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.broadcast.cluster import (
    SocketClient,
    SSEClient,
    create_through_form,
    instance,
    items_of,
    login,
    shared_data,
)
from tests.broadcast.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.live


def test_an_item_created_on_either_host_reaches_all_16_clients(
    redis: RedisServer, tmp_path: Path
) -> None:
    data = shared_data(tmp_path / "data")
    with (
        instance(redis.url, data, tmp_path / "a.log") as a,
        instance(redis.url, data, tmp_path / "b.log") as b,
    ):
        asyncio.run(fan_out(a, b))


async def fan_out(a: str, b: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Any] = []
        for base in (a, b):  # 4 SSE and 4 websocket clients on each host
            for _ in range(4):
                clients.append(await stack.enter_async_context(SSEClient(base)))
                clients.append(await stack.enter_async_context(SocketClient(base)))
        assert len(clients) == 16
        http_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a, timeout=20))
        http_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b, timeout=20))
        token_a, token_b = await login(http_a), await login(http_b)

        first = await create_through_form(http_a, token_a, "Created on host A")
        assert await items_of(clients, 1) == [[first]] * 16
        second = await create_through_form(http_b, token_b, "Created on host B")
        assert await items_of(clients, 1) == [[second]] * 16
        # Both hosts list both items: one database.
        for http in (http_a, http_b):
            page = await http.get("/items")
            assert "Created on host A" in page.text and "Created on host B" in page.text


def test_a_redis_restart_loses_no_event_and_legacy_pages_answer_throughout(
    tmp_path: Path,
) -> None:
    data = shared_data(tmp_path / "data")
    with (
        redis_server(tmp_path) as own_redis,
        instance(own_redis.url, data, tmp_path / "serve.log") as base,
    ):
        asyncio.run(restart(own_redis, base))
    log = (tmp_path / "serve.log").read_text()
    assert "is unreachable" in log and "answers again" in log, log
    assert "Traceback" not in log, log


async def restart(server: RedisServer, base: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Any] = []
        for _ in range(3):
            clients.append(await stack.enter_async_context(SSEClient(base)))
            clients.append(await stack.enter_async_context(SocketClient(base)))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=20))
        token = await login(http)
        before = await create_through_form(http, token, "Before the restart")
        assert await items_of(clients, 1) == [[before]] * 6

        server.stop()
        during = []
        for n in range(3):  # the legacy form still works, and so do its pages
            during.append(await create_through_form(http, token, f"While Redis is away {n}"))
            assert (await http.get("/items")).status_code == 200
            assert (await http.get(f"/api/items/{during[-1]}")).status_code == 200
        server.start()
        after = await create_through_form(http, token, "After the restart")
        assert await items_of(clients, 4, timeout=30) == [[*during, after]] * 6


def test_last_event_id_resumes_the_stream_without_loss_or_duplicates(
    redis: RedisServer, tmp_path: Path
) -> None:
    data = shared_data(tmp_path / "data")
    with instance(redis.url, data, tmp_path / "serve.log") as base:
        asyncio.run(resume(base))


async def resume(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        token = await login(http)
        async with SSEClient(base) as first:
            seen = [await create_through_form(http, token, "Seen 1")]
            assert (await first.item())["id"] == seen[0]
            last_id = first.last_id
        assert last_id is not None
        missed = [await create_through_form(http, token, f"Missed {n}") for n in range(3)]
        # The reconnection may land on the other worker: the replay comes from Redis.
        async with SSEClient(base, last_id=last_id) as again:
            live = await create_through_form(http, token, "Live again")
            got = [(await again.item())["id"] for _ in range(4)]
            assert got == [*missed, live]
            # Nothing more: no duplicate of the replayed events follows.
            later = await create_through_form(http, token, "Later")
            assert (await again.item())["id"] == later
