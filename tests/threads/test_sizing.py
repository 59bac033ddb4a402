"""Threads that size themselves: the controller driven window by window, the gate with threads.

The controller is pure, so each test feeds it the windows a workload would produce
(throughput and CPU load as functions of the limit, from measurements of real
views) and checks where it settles; no test depends on timing.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge
from bridge.threads.pool import ThreadPool
from bridge.threads.sizing import DEFAULT_START, Gate, HillClimb, Window, adaptive_gate
from tests.asgi import Client, http_scope

Model = Callable[[int], tuple[float, float]]  # limit -> (req/s, CPU seconds per second)


def io_bound(limit: int) -> tuple[float, float]:
    """A view that waits 20 ms and costs 150 us of CPU, with 256 connections offered."""
    rate = min(limit, 256) / 0.02
    return rate, rate * 150e-6


# Measured with a Django ORM view on one uvicorn process (2 cores): req/s by threads.
ORM = {1: 600.0, 2: 669.0, 3: 640.0, 4: 593.0, 8: 555.0, 16: 500.0, 32: 443.0}


def cpu_bound(limit: int) -> tuple[float, float]:
    """The ORM view: the GIL is the bottleneck, and every thread past two costs throughput."""
    known = sorted(ORM)
    below = max(k for k in known if k <= limit)
    above = min((k for k in known if k >= limit), default=below)
    if above == below:
        return ORM[below], 0.98
    share = (limit - below) / (above - below)
    return ORM[below] + share * (ORM[above] - ORM[below]), 0.98


def drive(
    controller: HillClimb,
    model: Model,
    windows: int,
    noise: float = 0.0,
    limits: list[int] | None = None,
) -> list[float]:
    """Feed ``windows`` saturated half-second windows; return the throughput of each
    (and append the limit each window ran at to ``limits``)."""
    jitter = random.Random(18)
    rates = []
    for _ in range(windows):
        if limits is not None:
            limits.append(controller.limit)
        rate, load = model(controller.limit)
        rate *= 1 + jitter.uniform(-noise, noise)
        rates.append(rate)
        controller.update(Window(round(rate * 0.5), 0.5, load * 0.5, saturated=True))
    return rates


def test_an_io_bound_view_climbs_to_the_ceiling_within_two_seconds() -> None:
    controller = HillClimb(64)
    assert controller.limit == DEFAULT_START
    limits = []
    for _ in range(4):
        drive(controller, io_bound, 1)
        limits.append(controller.limit)
    assert limits == [16, 32, 64, 64]


def test_an_io_bound_view_stays_at_the_ceiling() -> None:
    controller = HillClimb(64)
    rates = drive(controller, io_bound, 40, noise=0.03)
    ideal = 64 / 0.02
    assert sum(rates[8:]) / len(rates[8:]) >= 0.95 * ideal


def test_a_cpu_bound_view_settles_within_ten_percent_of_the_best_count() -> None:
    controller = HillClimb(32)
    rates = drive(controller, cpu_bound, 60, noise=0.03)
    best = max(ORM.values())
    settled = rates[10:]
    assert sum(settled) / len(settled) >= 0.9 * best
    assert controller.limit <= 4
    # A fixed 32 threads, the old default, would give 443: 0.66 of the best.
    assert ORM[32] / best < 0.7


def test_a_cpu_bound_view_on_a_noisy_machine_still_stays_low() -> None:
    controller = HillClimb(32)
    rates = drive(controller, cpu_bound, 60, noise=0.08)
    settled = rates[10:]
    assert sum(settled) / len(settled) >= 0.9 * max(ORM.values())


def test_a_workload_that_changes_is_followed() -> None:
    controller = HillClimb(64)
    drive(controller, cpu_bound, 20)
    assert controller.limit <= 4
    drive(controller, io_bound, 10)
    assert controller.limit == 64
    drive(controller, cpu_bound, 30)
    assert controller.limit <= 8


def test_windows_where_nothing_waited_change_nothing() -> None:
    controller = HillClimb(64)
    for _ in range(10):
        controller.update(Window(100, 0.5, 0.01, saturated=False))
    assert controller.limit == DEFAULT_START


def test_an_open_gate_stays_open_while_the_loop_keeps_the_gil_busy() -> None:
    # A view of a few microseconds: the process is busy, but in the loop's thread; the
    # workers use a fifth of a core, and every thread may keep taking calls.
    controller = HillClimb(32, start=32)
    for _ in range(20):
        controller.update(Window(10_000, 0.5, 0.51, saturated=False, worker_cpu_seconds=0.1))
    assert controller.limit == 32


def test_workers_contending_below_the_limit_halve_it_until_it_binds() -> None:
    # The ORM view under 12 concurrent requests, from an open gate: no call waits for a
    # turn above 12, yet the workers hold the GIL; the limit halves to where it binds,
    # and the climb then finds the best count.
    controller = HillClimb(32, start=32)
    limits = []
    for _ in range(40):
        limits.append(controller.limit)
        rate, load = cpu_bound(min(controller.limit, 12))
        busy = controller.limit < 12
        controller.update(Window(round(rate * 0.5), 0.5, load * 0.5, busy, load * 0.4))
    assert limits[:3] == [32, 16, 8]
    assert controller.limit <= 4


def test_the_default_gate_starts_open() -> None:
    assert adaptive_gate(16).limit == 16


def test_an_empty_window_changes_nothing() -> None:
    controller = HillClimb(64)
    controller.update(Window(0, 0.5, 0.0, saturated=True))
    assert controller.limit == DEFAULT_START


def test_the_limit_stays_between_one_and_the_ceiling() -> None:
    controller = HillClimb(3)
    assert controller.limit == 3
    drive(controller, io_bound, 5)
    assert controller.limit == 3
    alone = HillClimb(1)
    drive(alone, cpu_bound, 10)
    assert alone.limit == 1
    for _ in range(5):
        alone.starved()
    assert alone.limit == 1


# Measured later on the same machine (docs/benchmarks.md): one thread is best, and
# every count from two to eight loses about a fifth.
ORM_ONE = {1: 573.0, 2: 478.0, 4: 461.0, 8: 468.0, 16: 420.0, 32: 367.0}


def table_model(table: dict[int, float]) -> Model:
    def model(limit: int) -> tuple[float, float]:
        below = max(k for k in table if k <= limit)
        above = min((k for k in table if k >= limit), default=below)
        share = 0.0 if above == below else (limit - below) / (above - below)
        return table[below] + share * (table[above] - table[below]), 0.98

    return model


def test_a_view_best_on_one_thread_rests_there_instead_of_probing_every_other_window() -> None:
    controller = HillClimb(32)
    limits: list[int] = []
    rates = drive(controller, table_model(ORM_ONE), 120, noise=0.03, limits=limits)
    settled = rates[10:]
    assert sum(settled) / len(settled) >= 0.97 * ORM_ONE[1]
    # After the descent, a probe of two threads comes ever more rarely (rests of 1,
    # 2, 4 ... 16 windows); bouncing between one and two would put half the windows
    # at two.
    assert limits[-1] == 1
    assert limits[20:].count(2) <= 8, limits


def test_a_rest_ends_at_once_when_calls_start_waiting_instead_of_computing() -> None:
    controller = HillClimb(64)
    drive(controller, table_model(ORM_ONE), 60)
    assert controller.limit == 1 and controller.resting
    limits = []
    for _ in range(8):
        drive(controller, io_bound, 1)
        limits.append(controller.limit)
    assert limits[:7] == [2, 4, 8, 16, 32, 64, 64], limits


def test_a_rest_ends_when_the_throughput_at_its_level_moves_by_a_fifth() -> None:
    controller = HillClimb(32)
    drive(controller, table_model(ORM_ONE), 60)
    assert controller.limit == 1 and controller.resting
    # Same busy CPU, but each call now also waits on something: a third more
    # throughput at two threads than at one, and the rest's level moved.
    drive(controller, lambda limit: (300.0 * min(limit, 3), 0.98), 1)
    assert controller.resting == 0
    drive(controller, lambda limit: (300.0 * min(limit, 3), 0.98), 6)
    assert controller.limit >= 3


def test_a_move_that_hurt_is_undone_exactly() -> None:
    controller = HillClimb(32, start=8)
    drive(controller, lambda limit: (500.0, 0.98), 1)  # flat and busy: a probe down
    assert controller.limit == 7
    drive(controller, lambda limit: (500.0 if limit == 8 else 400.0, 0.98), 1)
    assert controller.limit == 8 and controller.resting == 1


def test_at_the_floor_a_second_thread_is_tried() -> None:
    controller = HillClimb(8, start=1)
    drive(controller, lambda limit: (600.0, 0.98), 1)
    assert controller.limit == 2


def test_starvation_raises_the_limit_by_one_or_doubles_it_when_the_cpu_is_idle() -> None:
    controller = HillClimb(64)
    assert controller.starved(cpu_load=0.95) == DEFAULT_START + 1
    assert controller.starved(cpu_load=0.0) == 2 * (DEFAULT_START + 1)


def test_a_ceiling_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1, not 0"):
        HillClimb(0)


# -- the gate, with real threads ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recording(HillClimb):
    def __init__(self, ceiling: int, start: int) -> None:
        super().__init__(ceiling, start)
        self.windows: list[Window] = []

    def update(self, window: Window) -> int:
        self.windows.append(window)
        return self.limit


def test_the_gate_lets_limit_workers_hold_a_turn_at_once() -> None:
    clock = FakeClock()
    gate = Gate(Recording(8, start=2), interval=60, clock=clock, cpu_clock=clock)
    release = threading.Event()
    inside: list[int] = []
    most = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal most
        assert gate.try_enter() or gate.enter(lambda: True)
        with lock:
            inside.append(1)
            most = max(most, gate.turns)
        release.wait(10)
        assert gate.finish(lane=False)  # nothing lowered the limit: the turn is kept
        gate.leave()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(1000):
        if gate.waiting == 4 and gate.turns == 2:
            break
        threading.Event().wait(0.01)
    assert (gate.turns, gate.waiting) == (2, 4)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(inside) == 6 and most == 2
    assert (gate.turns, gate.waiting) == (0, 0)


def test_the_gate_hands_the_controller_one_window_per_interval() -> None:
    clock = FakeClock()
    controller = Recording(8, start=1)
    gate = Gate(controller, interval=0.5, clock=clock, cpu_clock=lambda: clock.now / 4)
    assert gate.try_enter()
    for _ in range(3):
        gate.finish(lane=False)
    clock.now = 0.6
    gate.finish(lane=False)
    (window,) = controller.windows
    assert window == Window(completed=4, seconds=0.6, cpu_seconds=0.15, saturated=False)


def busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.parametrize("worker_busy", [True, False], ids=["workers", "loop"])
def test_a_window_tells_the_workers_cpu_from_the_loops(worker_busy: bool) -> None:
    # This thread plays the loop; one worker calls finish() until a window closes.
    controller = Recording(8, start=1)
    gate = Gate(controller, interval=0.3)
    gate.watch_loop(threading.get_ident())
    assert gate.try_enter()

    def worker() -> None:
        while not controller.windows:
            busy(0.02) if worker_busy else time.sleep(0.02)
            gate.finish(lane=False)

    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        busy(0.02) if not worker_busy else time.sleep(0.02)
    thread.join(10)
    (window,) = controller.windows[:1]
    share = window.worker_cpu_seconds / window.cpu_seconds
    assert share > 0.8 if worker_busy else share < 0.2


def test_a_turn_is_given_back_when_the_limit_falls_below_the_turns_held() -> None:
    controller = HillClimb(8, start=2)
    gate = Gate(controller, interval=60)
    assert gate.try_enter() and gate.try_enter() and not gate.try_enter()
    controller.limit = 1
    assert not gate.finish(lane=False)  # one turn too many: this worker gives its back
    assert gate.finish(lane=False) and gate.turns == 1


def test_a_lane_lets_one_more_worker_through_while_it_lasts() -> None:
    gate = Gate(HillClimb(8, start=1), interval=60)
    assert gate.try_enter() and not gate.try_enter()
    gate.open_lane()
    assert gate.try_enter()  # the lane's turn
    assert gate.finish(lane=True) is False  # the lane ended: its extra turn goes
    assert (gate.turns, gate.lanes) == (1, 0)


def test_interrupt_sends_a_waiting_worker_away_without_a_turn() -> None:
    gate = Gate(HillClimb(8, start=1), interval=60, starvation=60)
    assert gate.try_enter()
    entered: list[bool] = []
    waiter = threading.Thread(target=lambda: entered.append(gate.enter(lambda: True)))
    waiter.start()
    while not gate.waiting:
        threading.Event().wait(0.005)
    gate.interrupt()
    waiter.join(10)
    assert entered == [False] and gate.turns == 1


# -- the gate in a pool, with real threads --------------------------------------------------


def gated_pool(limit: int, starvation: float = 60, clock: Any = None) -> ThreadPool:
    pool = ThreadPool(8, 100)
    controller = Recording(8, start=limit)
    if clock is None:
        pool.gate = Gate(controller, interval=60, starvation=starvation)
    else:
        pool.gate = Gate(controller, interval=0.5, starvation=starvation, clock=clock)
    return pool


async def running(pool: ThreadPool, count: int) -> None:
    while pool.busy < count:
        await asyncio.sleep(0.005)


def test_a_busy_pool_at_a_limit_of_one_runs_its_calls_back_to_back_in_one_thread() -> None:
    # The point of taking a turn before a call: the turn is not handed to another thread
    # after each call while calls keep coming (each hand-off costs a GIL switch).
    pool = gated_pool(limit=1)
    release = threading.Event()

    def call(wait: bool) -> int:
        if wait:
            release.wait(10)
        return threading.get_ident()

    async def main() -> list[int]:
        first = asyncio.ensure_future(pool.run(call, True))
        await running(pool, 1)
        rest = [asyncio.ensure_future(pool.run(call, False)) for _ in range(30)]
        assert pool.gate is not None
        while pool.gate.waiting == 0:  # workers started for the queue wait for a turn
            await asyncio.sleep(0.005)
        release.set()
        return list(await asyncio.gather(first, *rest))

    idents = asyncio.run(main())
    assert len(pool.threads) > 1 and len(set(idents)) == 1
    pool.shutdown()


def test_calls_queued_while_every_turn_is_taken_mark_the_window_saturated() -> None:
    clock = FakeClock()
    pool = gated_pool(limit=1, clock=clock)
    release = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(release.wait, 10))
        await running(pool, 1)
        rest = [asyncio.ensure_future(pool.run(int)) for _ in range(3)]
        await asyncio.sleep(0.05)  # a worker started for them now waits for a turn
        clock.now = 1.0
        release.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert pool.gate is not None and isinstance(pool.gate.controller, Recording)
    assert pool.gate.controller.windows[0].saturated
    pool.shutdown()


def test_calls_one_at_a_time_leave_the_window_unsaturated() -> None:
    clock = FakeClock()
    pool = gated_pool(limit=1, clock=clock)

    async def main() -> None:
        for _ in range(5):
            await pool.run(int)
        clock.now = 1.0
        await pool.run(int)

    asyncio.run(main())
    assert pool.gate is not None and isinstance(pool.gate.controller, Recording)
    assert not pool.gate.controller.windows[0].saturated
    pool.shutdown()


def test_calls_that_wait_on_each_other_make_progress() -> None:
    # Two calls at a limit of one, the first waiting for the second: starvation
    # detection lets the second in after a period with no call completed.
    pool = ThreadPool(4, 16)
    pool.gate = Gate(HillClimb(4, start=1), interval=0.05, starvation=0.05)
    second_ran = threading.Event()

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(second_ran.wait, 10))
        await running(pool, 1)
        await pool.run(second_ran.set)
        assert await first

    asyncio.run(main())
    assert pool.gate.limit >= 2
    pool.shutdown()


def test_a_lane_runs_while_a_call_holds_the_only_turn() -> None:
    from asgiref.sync import sync_to_async

    pool = gated_pool(limit=1)
    release = threading.Event()

    async def main() -> str:
        first = asyncio.ensure_future(pool.run(release.wait, 10))
        await running(pool, 1)
        async with pool.request_context():
            answer: str = await asyncio.wait_for(sync_to_async(str.upper)("lane"), 10)
        assert not first.done()
        release.set()
        await first
        return answer

    assert asyncio.run(main()) == "LANE"
    assert pool.gate is not None and pool.gate.lanes == 0
    pool.shutdown()


def test_shutdown_ends_the_workers_waiting_for_a_turn() -> None:
    pool = gated_pool(limit=1)
    release = threading.Event()

    async def main() -> None:
        calls = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(4)]
        assert pool.gate is not None
        while pool.gate.waiting < 3:
            await asyncio.sleep(0.005)
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(main())
    threads = pool.threads
    assert len(threads) == 4
    pool.shutdown()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


# -- in a Bridge --------------------------------------------------------------------------


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def test_threads_size_themselves_by_default_and_can_be_fixed() -> None:
    adaptive = Bridge(validator(hello), max_threads=16)
    assert adaptive.pool.gate is not None and adaptive.pool.gate.controller.ceiling == 16
    fixed = Bridge(validator(hello), max_threads=16, adaptive_threads=False)
    assert fixed.pool.gate is None


def test_a_gated_bridge_serves_every_request() -> None:
    app = Bridge(validator(hello), max_threads=4)

    async def main() -> list[int]:
        clients = [Client() for _ in range(50)]
        await asyncio.gather(*(c.run(app, http_scope("/")) for c in clients))
        return [c.status for c in clients]

    assert asyncio.run(main()) == [200] * 50
    gate = app.pool.gate
    assert gate is not None
    for _ in range(1000):  # the last worker is idle just after handing back
        if app.pool.busy == 0:
            break
        threading.Event().wait(0.005)
    assert app.pool.busy == app.pool.waiting == 0
    assert gate.turns <= gate.limit and gate.lanes == 0


def test_a_call_cancelled_while_every_turn_is_taken_never_starts() -> None:
    pool = ThreadPool(4, 16)
    pool.gate = Gate(HillClimb(4, start=1), starvation=60)
    release = threading.Event()
    ran: list[str] = []

    def call(name: str) -> None:
        ran.append(name)
        if name == "first":
            release.wait(10)

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(call, "first"))
        while not ran:
            await asyncio.sleep(0.005)
        second = asyncio.ensure_future(pool.run(call, "second"))
        gate = pool.gate
        assert gate is not None
        while gate.waiting == 0:  # the second call is queued; a worker waits for a turn
            await asyncio.sleep(0.005)
        second.cancel()
        await asyncio.sleep(0.05)
        release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        while pool.busy:
            await asyncio.sleep(0.005)

    asyncio.run(main())
    assert ran == ["first"]
    pool.shutdown()
