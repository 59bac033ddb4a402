"""A Redis that hangs (SIGSTOP: connected, silent) never fails a legacy request that publishes."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from wsgiref.validate import validator

from bridge import Bridge, Broadcast
from tests.asgi import Client, http_scope
from tests.broadcast.redis_server import RedisServer
from tests.broadcast.test_redis import take

REQUESTS = 20


def publishing_app(broadcast: Broadcast) -> Any:
    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        event_id = broadcast.publish_sync("items", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"queued" if event_id is None else b"sent"]

    return validator(legacy)


def test_a_hung_redis_leaves_publishing_requests_answered(redis: RedisServer) -> None:
    """20 legacy requests publish while Redis is stopped: each is answered 200 while it is
    still stopped (publish_sync's own timeout is 10 s; the client waits 5), and once it
    runs again every event reaches the subscriber."""
    broadcast = Broadcast(redis.url)
    app = Bridge(publishing_app(broadcast), broadcast=broadcast, max_threads=REQUESTS)
    clients = [Client() for _ in range(REQUESTS)]
    elapsed: list[float] = []

    async def main() -> None:
        async with broadcast, broadcast.subscribe("items") as sub:
            with redis.hung():
                started = time.monotonic()
                requests = [
                    client.run(app, http_scope(f"/item/{n}", method="POST"), timeout=5)
                    for n, client in enumerate(clients)
                ]
                await asyncio.gather(*requests)
                elapsed.append(time.monotonic() - started)
            events = await take(sub, REQUESTS, timeout=20)
            assert sorted(e.data for e in events) == sorted(f"/item/{n}" for n in range(REQUESTS))
            assert sub.empty() and broadcast.dropped == 0

    try:
        asyncio.run(main())
    finally:
        app.pool.shutdown()
    assert [(c.status, c.body) for c in clients] == [(200, b"queued")] * REQUESTS
    print(f"{REQUESTS} publishing requests answered in {elapsed[0]:.2f} s with Redis hung")


def test_after_a_hang_publishes_go_straight_to_redis_again(redis: RedisServer) -> None:
    async def main() -> None:
        async with Broadcast(redis.url) as broadcast, broadcast.subscribe("items") as sub:
            with redis.hung():
                assert await broadcast.publish("items", "during") is None
            assert [e.data for e in await take(sub, 1, timeout=20)] == ["during"]
            for _ in range(100):  # the outbox drains, then publishing is direct again
                if await broadcast.publish("items", "after") is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("publish never went straight to Redis after the hang")

    asyncio.run(main())


def test_a_hung_redis_fills_the_outbox_by_bytes_and_counts_what_it_drops(
    redis: RedisServer,
) -> None:
    """1,000 x 10 KB published into a hung Redis: each returns at once, the outbox keeps
    the newest 1 MiB, the rest are counted, and what was kept arrives in order."""

    async def main() -> None:
        async with (
            Broadcast(redis.url, outbox_size=1024 * 1024) as publisher,
            Broadcast(redis.url) as subscriber,
            subscriber.subscribe("items") as sub,
        ):
            with redis.hung():
                for n in range(1000):
                    assert await publisher.publish("items", {"n": n, "pad": "x" * 10_000}) is None
                kept = 1000 - publisher.dropped
                assert 0 < kept <= 1024 * 1024 // 10_000
            # The kept events, and the first: its XADD was on its way to Redis when the
            # outbox dropped it, so it lands too (in whatever place): at least once.
            events = await take(sub, kept + 1, timeout=20)
            numbers = [e.data["n"] for e in events]
            assert 0 in numbers
            newest = [n for n in numbers if n != 0]
            assert newest == list(range(1000 - kept, 1000))

    asyncio.run(main())


def test_publishes_caught_together_by_a_hang_each_arrive_once(redis: RedisServer) -> None:
    """20 publishes at once into a hung Redis each send their own XADD before any runs out
    of time; each goes to the outbox with it, and each event arrives exactly once."""

    async def main() -> None:
        async with (
            Broadcast(redis.url) as publisher,
            Broadcast(redis.url) as subscriber,
            subscriber.subscribe("items") as sub,
        ):
            with redis.hung():
                ids = await asyncio.gather(*(publisher.publish("items", n) for n in range(20)))
                assert ids == [None] * 20
            events = await take(sub, 20, timeout=20)
            assert sorted(e.data for e in events) == list(range(20))
            await publisher.publish("items", "last")
            assert [e.data for e in await take(sub, 1)] == ["last"]  # no duplicate before it

    asyncio.run(main())
