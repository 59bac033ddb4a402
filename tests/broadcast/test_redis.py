"""The Redis backend against a real redis-server: one reader, many processes, restarts."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio

from bridge import Broadcast
from bridge.broadcast import Event
from tests.broadcast.redis_server import RedisServer


async def take(sub: object, count: int, timeout: float = 10.0) -> list[Event]:
    async def gather() -> list[Event]:
        return [await sub.get() for _ in range(count)]  # type: ignore[attr-defined]

    return await asyncio.wait_for(gather(), timeout)


async def readers(server: RedisServer) -> int:
    """Connections to ``server`` blocked in XREAD now."""
    async with redis.asyncio.Redis.from_url(server.url, decode_responses=True) as client:
        listing = await client.client_list()
    return sum(1 for c in listing if c.get("cmd") == "xread")


def test_one_connection_reads_every_channel_for_every_subscriber(redis: RedisServer) -> None:
    async def main() -> None:
        async with Broadcast(redis.url) as broadcast:
            opened = asyncio.Event()
            done = asyncio.Event()
            counts: dict[str, int] = {}

            async def subscriber(channel: str) -> None:
                async with broadcast.subscribe(channel) as sub:
                    counts[channel] = counts.get(channel, 0) + 1
                    if sum(counts.values()) == 60:
                        opened.set()
                    (event,) = await take(sub, 1)
                    assert event.data == channel
                    await done.wait()

            tasks = [asyncio.ensure_future(subscriber(f"room-{n % 3}")) for n in range(60)]
            await asyncio.wait_for(opened.wait(), 10)
            for n in range(3):
                await broadcast.publish(f"room-{n}", f"room-{n}")
            for _ in range(100):
                if await readers(redis) == 1:
                    break
                await asyncio.sleep(0.02)
            assert await readers(redis) == 1
            done.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())


def test_an_event_published_in_one_process_reaches_subscribers_in_another(
    redis: RedisServer,
) -> None:
    async def main() -> None:
        async with (
            Broadcast(redis.url) as here,
            Broadcast(redis.url) as there,
            here.subscribe("items") as near,
            there.subscribe("items") as far,
        ):
            await here.publish("items", "hello")
            assert [e.data for e in await take(far, 1)] == ["hello"]
            assert [e.data for e in await take(near, 1)] == ["hello"]

    asyncio.run(main())


def test_a_redis_restart_loses_nothing_and_the_next_events_arrive(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bridge.broadcast")

    async def main() -> None:
        async with (
            Broadcast(redis.url) as publisher,
            Broadcast(redis.url) as subscriber,
            subscriber.subscribe("items") as sub,
        ):
            await publisher.publish("items", "before")
            assert [e.data for e in await take(sub, 1)] == ["before"]

            redis.stop()
            # Published while Redis is away: held in order, not raised to the caller.
            assert await publisher.publish("items", "during 1") is None
            assert await publisher.publish("items", "during 2") is None
            await asyncio.sleep(0.3)  # the reader sees the outage and backs off
            redis.start()

            await publisher.publish("items", "after")
            events = await take(sub, 3, timeout=20)
            assert [e.data for e in events] == ["during 1", "during 2", "after"]
            await publisher.publish("items", "next")
            assert [e.data for e in await take(sub, 1)] == ["next"]

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("is unreachable" in m for m in messages), messages
    assert any("answers again" in m for m in messages), messages


def test_the_outbox_is_bounded_in_bytes_while_redis_is_away(redis: RedisServer) -> None:
    from bridge.broadcast.redis import ENTRY_OVERHEAD

    size = 5 * (len("items") + 1 + ENTRY_OVERHEAD)  # five one-digit events

    async def main() -> None:
        async with (
            Broadcast(redis.url, outbox_size=size) as publisher,
            Broadcast(redis.url) as subscriber,
            subscriber.subscribe("items") as sub,
        ):
            redis.stop()
            for n in range(8):
                await publisher.publish("items", n)
            assert publisher.dropped == 3
            redis.start()
            assert [e.data for e in await take(sub, 5, timeout=20)] == [3, 4, 5, 6, 7]

    asyncio.run(main())


def test_large_events_fill_the_outbox_by_their_bytes(redis: RedisServer) -> None:
    """10,000 x 10 KB while Redis is away holds at most outbox_size, not 97 MiB."""

    async def main() -> None:
        async with Broadcast(redis.url, outbox_size=1024 * 1024) as publisher:
            redis.stop()
            big = "x" * 10_000
            for _ in range(10_000):
                assert await publisher.publish("items", big) is None
            backend = publisher.backend
            held = sum(len(p.channel) + len(p.payload) for p in backend._outbox)  # type: ignore[attr-defined]
            assert held <= 1024 * 1024
            assert publisher.dropped == 10_000 - len(backend._outbox)  # type: ignore[attr-defined]
            assert publisher.dropped > 9_000
            redis.start()

    asyncio.run(main())


def test_an_unreachable_redis_at_startup_is_not_an_error(redis: RedisServer) -> None:
    async def main() -> None:
        redis.stop()
        async with Broadcast(redis.url) as broadcast, broadcast.subscribe("items") as sub:
            redis.start()
            await broadcast.publish("items", "late")
            assert [e.data for e in await take(sub, 1, timeout=20)] == ["late"]

    asyncio.run(main())


def test_valkey_urls_mean_redis(redis: RedisServer) -> None:
    async def main() -> None:
        url = redis.url.replace("redis://", "valkey://")
        async with Broadcast(url) as broadcast, broadcast.subscribe("items") as sub:
            await broadcast.publish("items", 1)
            assert [e.data for e in await take(sub, 1)] == [1]

    asyncio.run(main())
