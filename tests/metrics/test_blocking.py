"""The blocking detector charges a step for its own blocking only: CPU, sleeps, blocking calls.

The rule (``charge``) is tested reading by reading; then real steps, on real clocks:
a sleep is reported, while GIL hand-offs to busy threads, a garbage collection and a
burst of thousands of concurrent requests are not.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.metrics.blocking import Usage, charge, usage
from bridge.metrics.registry import Metrics, RouteStats
from bridge.wsgi.cycle import Outcome
from tests.asgi import Client, http_scope


def reading(
    wall: float, cpu: float = 0.0, process: float | None = None, switches: int = 0, gc: float = 0.0
) -> Usage:
    return Usage(wall, cpu, cpu if process is None else process, switches, gc)


START = reading(0.0)


def test_a_cpu_bound_step_is_charged_its_cpu_time() -> None:
    assert charge(START, reading(0.2, cpu=0.2)) == pytest.approx(0.2)


def test_a_sleep_is_charged_its_wall_time() -> None:
    # No CPU used, one voluntary switch (the sleep), nobody else ran.
    assert charge(START, reading(0.2, switches=1)) == pytest.approx(0.19)


def test_preemption_is_not_charged() -> None:
    # The wall time is long, but the thread never gave up the CPU: the kernel took it.
    assert charge(START, reading(0.2, cpu=0.01)) == pytest.approx(0.01)


def test_waiting_for_the_gil_behind_other_threads_is_not_charged() -> None:
    # 60 short waits while other threads of the process used 0.29 s of CPU.
    end = reading(0.3, cpu=0.01, process=0.30, switches=60)
    assert charge(START, end) == pytest.approx(0.01)


def test_only_the_wait_that_other_threads_cannot_explain_is_charged() -> None:
    end = reading(0.5, cpu=0.0, process=0.1, switches=1)
    assert charge(START, end) == pytest.approx(0.4)


def test_many_short_waits_are_hand_offs_even_when_the_holders_were_preempted() -> None:
    # 80 waits of 5 ms: the threads holding the GIL were themselves off the CPU.
    end = reading(0.4, cpu=0.01, process=0.15, switches=80)
    assert charge(START, end) == pytest.approx(0.01)


def test_one_long_wait_is_charged_beyond_a_hand_off() -> None:
    end = reading(0.2, switches=1)
    assert charge(START, end) == pytest.approx(0.2 - 2 * sys.getswitchinterval())


def test_a_garbage_collection_is_not_charged() -> None:
    assert charge(START, reading(0.15, cpu=0.15, gc=0.14)) == pytest.approx(0.01)


def test_without_a_switch_counter_every_wait_counts() -> None:
    start = Usage(0.0, 0.0, 0.0, -1, 0.0)
    assert charge(start, Usage(0.2, 0.0, 0.0, -1, 0.0)) == pytest.approx(0.19)


def test_the_charge_never_exceeds_the_wall_time() -> None:
    # CPU clocks tick in coarser steps than perf_counter.
    assert charge(START, reading(0.1, cpu=0.104)) == pytest.approx(0.1)


# -- real steps ---------------------------------------------------------------------------


class Recorder(Metrics):
    """Metrics that keep each charge instead of logging it."""

    def __init__(self, threshold: float) -> None:
        super().__init__(block_threshold=threshold)
        self.charges: list[float] = []

    def blocked(self, stats: RouteStats, seconds: float) -> None:
        self.charges.append(seconds)


def drive(step: Any, threshold: float) -> tuple[list[float], float]:
    """Run the coroutine function ``step`` through the detector; return charges and wall time."""
    metrics = Recorder(threshold)
    stats = RouteStats("/step", "async")

    async def served() -> Outcome:
        return Outcome(await step())

    async def main() -> float:
        started = time.perf_counter()
        await metrics.measure(stats, served(), on_loop=True)
        await metrics.stop()
        return time.perf_counter() - started

    wall = asyncio.run(main())
    assert (stats.requests, stats.errors, stats.latency.count) == (1, 0, 1)
    return metrics.charges, wall


def test_a_real_sleep_is_reported() -> None:
    async def sleeps() -> int:
        time.sleep(0.2)
        return 200

    charges, _ = drive(sleeps, 0.1)
    assert len(charges) == 1 and charges[0] > 0.1


def test_a_real_busy_loop_is_reported() -> None:
    async def spins() -> int:
        deadline = time.thread_time() + 0.15
        while time.thread_time() < deadline:
            pass
        return 200

    charges, _ = drive(spins, 0.1)
    assert len(charges) == 1 and charges[0] > 0.1


@pytest.fixture
def busy_threads() -> Iterator[None]:
    """Threads that hold the GIL whenever they can, like legacy views doing work.

    A 20 ms switch interval makes each hand-off cost more than the 5 ms default, so
    the test sees long steps even when the kernel often preempts the spinners.
    """
    stop = threading.Event()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.02)

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)


def test_gil_hand_offs_to_busy_threads_are_not_reported(busy_threads: None) -> None:
    # hashlib releases the GIL while it hashes 64 KiB (as a socket send or a TLS write
    # does); a busy thread takes it, and getting it back waits a switch interval each
    # time: the step's wall time is long, the code it ran is not.
    data = bytes(64 * 1024)
    threshold = 0.05
    walls: list[float] = []

    async def hashes() -> int:
        for _ in range(10):  # ten steps, each timed here too
            started = time.perf_counter()
            for _ in range(100):
                hashlib.sha256(data).digest()
            walls.append(time.perf_counter() - started)
            if len([wall for wall in walls if wall > threshold]) >= 3:
                break
            await asyncio.sleep(0)
        return 200

    charges, _ = drive(hashes, threshold)
    stretched = [wall for wall in walls if wall > threshold]
    assert stretched, f"no step was stretched ({walls}); the test proves nothing"
    assert charges == []


def test_a_garbage_collection_in_the_step_is_not_reported() -> None:
    # The heap of a process holding thousands of connections, collected in one step.
    heap = [[{"n": n}] for n in range(400_000)]
    gc.collect()
    started = time.perf_counter()
    gc.collect()
    collection = time.perf_counter() - started
    threshold = collection / 2

    async def collects() -> int:
        gc.collect()
        return 200

    charges, wall = drive(collects, threshold)
    del heap
    assert wall > threshold
    assert charges == []


# -- a burst of concurrent requests through a Bridge ---------------------------------------


def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    total = sum(range(20_000))  # some CPU in the pool's threads meanwhile
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_a_burst_of_thousands_of_streams_gets_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    app = Bridge(validator(legacy), max_threads=8)
    opened = 0

    @app.route("/sse")
    async def sse(request: Request) -> Response:
        nonlocal opened
        opened += 1

        async def events() -> Any:
            yield b"data: hello\n\n"
            await asyncio.sleep(0.5)  # idle, as a feed is between events

        return Response(events(), mimetype="text/event-stream")

    @app.route("/sleeps")
    async def sleeps(request: Request) -> str:
        time.sleep(0.2)
        return "slept"

    count = 3000

    async def main() -> None:
        streams = [Client().run(app, http_scope("/sse"), timeout=60) for _ in range(count)]
        pages = [Client().run(app, http_scope("/page"), timeout=60) for _ in range(200)]
        await asyncio.gather(*streams, *pages)

    caplog.set_level(logging.WARNING, logger="bridge")
    asyncio.run(main())
    assert opened == count
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    # The same detector, on the same Bridge, still sees a view that blocks.
    asyncio.run(Client().run(app, http_scope("/sleeps")))
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert '"/sleeps" blocked the event loop' in message


# -- how a request on the loop ends: each ending filed once -------------------------------


def measured(serving: Any, metrics: Metrics, stats: RouteStats) -> Any:
    async def awaits() -> object:
        return await metrics.measure(stats, serving, on_loop=True)

    return awaits()


def test_a_view_that_raises_is_filed_once_as_an_error_and_its_error_goes_on() -> None:
    metrics, stats = Metrics(), RouteStats("/raises", "async")

    async def raises() -> Outcome:
        await asyncio.sleep(0)
        raise ValueError("broken")

    async def main() -> None:
        with pytest.raises(ValueError, match="broken"):
            await measured(raises(), metrics, stats)
        await metrics.stop()

    asyncio.run(main())
    assert (stats.requests, stats.errors, stats.latency.count) == (1, 1, 1)


def test_a_request_closed_while_it_waits_closes_its_view_and_is_filed_once() -> None:
    # A server may close the request's coroutine instead of cancelling its task.
    metrics, stats = Metrics(), RouteStats("/waits", "async")
    closed: list[bool] = []

    async def waits() -> Outcome:
        try:
            await asyncio.sleep(10)
        finally:
            closed.append(True)
        return Outcome(200)

    async def main() -> None:
        request = measured(waits(), metrics, stats)
        request.send(None)  # its first step: the view now waits on its sleep
        request.close()
        request.close()
        await metrics.stop()

    asyncio.run(main())
    assert closed == [True]
    assert (stats.requests, stats.errors, stats.latency.count) == (1, 0, 1)


def test_a_request_never_awaited_is_not_filed() -> None:
    metrics, stats = Metrics(), RouteStats("/never", "async")

    async def main() -> None:
        view = asyncio.sleep(0, Outcome(200))
        request = metrics.measure(stats, view, on_loop=True)
        del request
        view.close()
        await metrics.stop()

    asyncio.run(main())
    assert stats.requests == 0


def test_a_reading_is_of_this_thread_and_moves_forward() -> None:
    # Not a timing: the reading must be of the current thread and move forward.
    first = usage()
    sum(range(100_000))
    second = usage()
    assert second.wall > first.wall and second.thread_cpu >= first.thread_cpu


# -- on a live server ---------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.timeout(120)
def test_thousands_of_connections_at_once_on_uvicorn_get_no_warning(tmp_path: Path) -> None:
    from bench.idle import _client, raise_descriptor_limit
    from tests.servers import free_port, running, wait_for_port

    count = 2000
    raise_descriptor_limit(count)
    port = free_port()
    log = tmp_path / "uvicorn.log"
    args = ["uvicorn", "tests.apps.burst_app:app", "--port", str(port), "--log-level", "warning"]
    with running(args, port, log=log) as process:
        wait_for_port(port, process)
        # Every stream opens (256 handshakes in flight at a time), gets its event, closes.
        assert _client(port, "sse", count, hold=False) == {"alive": count}
        assert "blocked the event loop" not in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sleeps", timeout=10) as answer:
            assert answer.read() == b"slept"
        for _ in range(100):  # the warning is written as the step ends
            if "blocked the event loop" in log.read_text():
                break
            time.sleep(0.05)
    warnings = [line for line in log.read_text().splitlines() if "blocked the event loop" in line]
    assert len(warnings) == 1 and '"/sleeps"' in warnings[0], warnings
