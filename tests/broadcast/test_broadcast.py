"""``Broadcast`` on both backends: order, ids, replay, bounds, and sync publishers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import sync_to_async

from bridge import Broadcast
from bridge.broadcast import Event, event_key
from tests.broadcast.redis_server import RedisServer

Factory = Callable[..., Broadcast]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Makes a ``Broadcast`` on the backend under test (a real Redis for ``redis``)."""
    if request.param == "memory":
        yield lambda **options: Broadcast("memory://", **options)
    else:
        server: RedisServer = request.getfixturevalue("redis")
        yield lambda **options: Broadcast(server.url, **options)


async def take(subscription: object, count: int, timeout: float = 5.0) -> list[Event]:
    async def gather() -> list[Event]:
        return [await subscription.get() for _ in range(count)]  # type: ignore[attr-defined]

    return await asyncio.wait_for(gather(), timeout)


def test_subscribers_get_every_event_in_order_with_increasing_ids(make: Factory) -> None:
    async def main() -> None:
        async with make() as broadcast:
            async with broadcast.subscribe("items") as a, broadcast.subscribe("items") as b:
                assert broadcast.subscribers == 2
                ids = [await broadcast.publish("items", {"n": n}) for n in range(20)]
                for sub in (a, b):
                    events = await take(sub, 20)
                    assert [e.data for e in events] == [{"n": n} for n in range(20)]
                    assert [e.id for e in events] == ids
                    assert [e.channel for e in events] == ["items"] * 20
                keys = [event_key(i) for i in ids if i is not None]
                assert keys == sorted(set(keys)) and len(keys) == 20
            assert broadcast.subscribers == 0

    asyncio.run(main())


def test_channels_are_kept_apart(make: Factory) -> None:
    async def main() -> None:
        async with (
            make() as broadcast,
            broadcast.subscribe("a") as a,
            broadcast.subscribe("b") as b,
        ):
            await broadcast.publish("a", "for a")
            await broadcast.publish("b", "for b")
            assert [e.data for e in await take(a, 1)] == ["for a"]
            assert [e.data for e in await take(b, 1)] == ["for b"]
            await asyncio.sleep(0.05)
            assert a.empty() and b.empty()

    asyncio.run(main())


def test_a_subscriber_that_stops_reading_loses_its_oldest_events(make: Factory) -> None:
    async def main() -> None:
        async with (
            make(backlog=3) as broadcast,
            broadcast.subscribe("items") as slow,
            broadcast.subscribe("items") as fast,
        ):
            for n in range(5):
                await broadcast.publish("items", n)
                assert (await take(fast, 1))[0].data == n
            assert [e.data for e in await take(slow, 3)] == [2, 3, 4]
            assert slow.dropped == 2 and fast.dropped == 0

    asyncio.run(main())


def test_last_id_replays_what_was_missed_then_goes_live_without_duplicates(make: Factory) -> None:
    async def main() -> None:
        async with make() as broadcast:
            ids = [await broadcast.publish("items", n) for n in range(5)]
            seen = ids[1]
            assert seen is not None
            async with broadcast.subscribe("items", last_id=seen) as sub:
                await broadcast.publish("items", 5)
                events = await take(sub, 4)
                assert [e.data for e in events] == [2, 3, 4, 5]
                await asyncio.sleep(0.05)
                assert sub.empty()

    asyncio.run(main())


def test_replay_is_bounded_by_max_len(make: Factory) -> None:
    async def main() -> None:
        async with make(max_len=10) as broadcast:
            first = await broadcast.publish("items", 0)
            for n in range(1, 200):
                await broadcast.publish("items", n)
            assert first is not None
            async with broadcast.subscribe("items", last_id=first) as sub:
                await broadcast.publish("items", "live")
                replayed: list[object] = []
                while True:
                    event = await take(sub, 1)
                    replayed.append(event[0].data)
                    if event[0].data == "live":
                        break
            # Redis trims approximately (MAXLEN ~): whole nodes of up to 100 entries.
            assert 10 <= len(replayed) - 1 <= 110
            assert replayed[-2] == 199

    asyncio.run(main())


def test_publish_sync_from_a_bridge_thread_lands_on_the_loop(make: Factory) -> None:
    async def main() -> None:
        async with make() as broadcast:
            loop_thread = threading.get_ident()

            def legacy_view() -> str | None:
                assert threading.get_ident() != loop_thread
                return broadcast.publish_sync("items", {"from": "thread"})

            async with broadcast.subscribe("items") as sub:
                event_id = await sync_to_async(legacy_view)()
                (event,) = await take(sub, 1)
                assert event.data == {"from": "thread"} and event.id == event_id

            # A plain thread, not started by asgiref, lands on the same loop too.
            async with broadcast.subscribe("items") as sub:
                worker = threading.Thread(target=broadcast.publish_sync, args=("items", 7))
                worker.start()
                (event,) = await take(sub, 1)
                worker.join(5)
                assert event.data == 7

            with pytest.raises(RuntimeError, match=r"await broadcast\.publish"):
                broadcast.publish_sync("items", 1)

    asyncio.run(main())


def test_stop_ends_every_subscription(make: Factory) -> None:
    async def main() -> None:
        broadcast = make()
        async with broadcast.subscribe("items") as sub:
            waiting = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0.01)
            await broadcast.stop()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(waiting, 5)

    asyncio.run(main())


def test_stop_leaves_no_task_behind(make: Factory) -> None:
    # A task left running after stop() is cancelled when the loop ends; one caught
    # inside a Redis command leaves its connection open (a ResourceWarning later).
    async def main() -> list[str]:
        broadcast = make()
        async with contextlib.AsyncExitStack() as stack:
            for channel in ("a", "b", "c", "d", "e"):
                await stack.enter_async_context(broadcast.subscribe(channel))
            await broadcast.stop()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        return sorted(task.get_coro().__qualname__ for task in others)  # type: ignore[union-attr]

    assert asyncio.run(main()) == []


def test_bad_urls_ids_and_bounds_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r'"http://x" must start with memory:// or redis://'):
        Broadcast("http://x")
    with pytest.raises(ValueError, match="at least 1"):
        Broadcast(backlog=0)
    with pytest.raises(ValueError, match=r'"nope" must be in format "<milliseconds>-<sequence>"'):
        event_key("nope")

    async def main() -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(ValueError, match='"abc"'):
                async with broadcast.subscribe("items", last_id="abc"):
                    pass  # pragma: no cover

    asyncio.run(main())


def test_data_must_be_json() -> None:
    async def main() -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(TypeError):
                await broadcast.publish("items", object())

    asyncio.run(main())


def test_events_are_server_sent_events_with_their_id() -> None:
    event = Event("17-2", "items", {"a": "b"})
    assert event.sse("item") == 'id: 17-2\nevent: item\ndata: {"a":"b"}\n\n'


def test_a_stuck_subscriber_costs_bounded_memory_and_delays_no_one(make: Factory) -> None:
    async def main() -> None:
        async with (
            make(backlog=50) as broadcast,
            broadcast.subscribe("items") as stuck,
            broadcast.subscribe("items") as ok,
        ):
            got = 0
            for n in range(1000):  # twenty times the backlog, never read by `stuck`
                await broadcast.publish("items", n)
                while not ok.empty():
                    assert ok.get_nowait().data == got
                    got += 1
                assert len(stuck._events) <= 50
            while got < 1000:
                assert (await take(ok, 1))[0].data == got
                got += 1
            assert stuck.dropped == 950
            assert [e.data for e in await take(stuck, 50)] == list(range(950, 1000))

    asyncio.run(main())
