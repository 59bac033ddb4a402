"""Replay under hostile ``Last-Event-ID`` values, on both backends: at most one backlog
read, shared between subscribers, bad ids refused with a sentence, far-future ids as now."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bridge import Broadcast
from bridge.broadcast import Event, event_key
from tests.broadcast.test_broadcast import Factory, make, take

__all__ = ["make"]  # the fixture, on both backends

BACKLOG = 10


class CountingReads:
    """Records what each replay read from the backend (a spy on the real backend)."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.reads: list[list[Event]] = []
        backend = broadcast.backend
        history = backend.history

        async def counted(channel: str, after: str, count: int) -> list[Event]:
            events = await history(channel, after, count)
            self.reads.append(events)
            return events

        backend.history = counted  # type: ignore[method-assign]


def test_last_event_id_0_0_reads_one_backlog_the_newest(make: Factory) -> None:
    async def main() -> None:
        async with make(backlog=BACKLOG) as broadcast:
            reads = CountingReads(broadcast)
            ids = [await broadcast.publish("items", n) for n in range(50)]
            async with broadcast.subscribe("items", last_id="0-0") as sub:
                assert [e.data for e in await take(sub, BACKLOG)] == list(range(40, 50))
                assert sub.empty()
                await broadcast.publish("items", "live")
                assert [e.data for e in await take(sub, 1)] == ["live"]
            assert [len(events) for events in reads.reads] == [BACKLOG]
            assert [e.id for e in reads.reads[0]] == ids[40:]

    asyncio.run(main())


def test_subscribers_replaying_from_one_id_share_one_read_and_the_same_events(
    make: Factory,
) -> None:
    """200 subscribers reconnecting with Last-Event-ID: 0-0 at once cost one read."""

    async def main() -> None:
        async with make(backlog=BACKLOG) as broadcast:
            reads = CountingReads(broadcast)
            for n in range(30):
                await broadcast.publish("items", {"n": n, "pad": "x" * 1000})
            async with contextlib.AsyncExitStack() as stack:
                subs = await asyncio.gather(
                    *(
                        stack.enter_async_context(broadcast.subscribe("items", last_id="0-0"))
                        for _ in range(200)
                    )
                )
                replays = [await take(sub, BACKLOG) for sub in subs]
            assert len(reads.reads) == 1
            first = replays[0]
            assert [e.data["n"] for e in first] == list(range(20, 30))
            for replay in replays[1:]:
                assert all(a is b for a, b in zip(replay, first, strict=True))

    asyncio.run(main())


@pytest.mark.parametrize(
    "bad",
    [
        "1_000-0",  # int() takes it; Redis does not
        "18446744073709551616-0",  # 2**64: past Redis's unsigned 64 bits
        "99999999999999999999999-0",
        " 12-0",
        "\u0661\u0662-0",  # Arabic-Indic digits, which int() reads as 12
        "12-",
        "-1",
        "",
    ],
)
def test_ids_that_redis_would_refuse_are_refused_with_a_sentence(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must be in format .* two numbers below 2\*\*64"):
        event_key(bad)


def test_the_largest_id_is_an_id() -> None:
    largest = f"{2**64 - 1}-{2**64 - 1}"
    assert event_key(largest) == (2**64 - 1, 2**64 - 1)
    assert event_key("1700000000000") == (1700000000000, 0)


@pytest.mark.parametrize("far", ["99999999999999-0", f"{2**64 - 1}-{2**64 - 1}"])
def test_an_id_from_the_future_is_taken_as_now(make: Factory, far: str) -> None:
    """A far-future id would silence the client until the clock reached it."""

    async def main() -> None:
        async with make(backlog=BACKLOG) as broadcast:
            reads = CountingReads(broadcast)
            await broadcast.publish("items", "before")
            async with broadcast.subscribe("items", last_id=far) as sub:
                await broadcast.publish("items", "after")
                assert [e.data for e in await take(sub, 1)] == ["after"]
                assert sub.empty()
            assert reads.reads == []  # nothing to replay from the future

    asyncio.run(main())
