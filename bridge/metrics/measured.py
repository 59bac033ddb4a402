"""A migrated request measured by one slotted object instead of a suspended frame.

``Metrics.measure`` awaits a legacy request inside a coroutine of its own, the
cheapest way per step. A connection that may stay open for hours (a websocket, an
async view's stream) keeps whatever measures it for as long as it is open, so it is
measured by ``Measured``: the iterator an ``await`` drives, which passes each step
(``send``, ``throw``, ``close``) to the request's coroutine and files its outcome
under its ``RouteStats`` when it ends. ``Stepped`` also times each step for the
blocking detector (``blocking.py``). Each keeps its coroutine, its stats and the
first step's clock: 56 or 64 bytes and a float, where the frames they replace kept
0.3 KiB (a websocket's) or 0.6 (an async view's, with the detector's generator).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..stepping import Stepper
from .blocking import Usage, charge, hook_gc, usage

if TYPE_CHECKING:
    from ..wsgi.cycle import Outcome
    from .values import Recorder, RouteStats


class Measured(Stepper):
    """Await ``coro`` and file its outcome under ``stats``, as ``Metrics.measure`` does."""

    __slots__ = ("coro", "started", "stats")

    def __init__(self, coro: Coroutine[Any, Any, Outcome], stats: RouteStats) -> None:
        self.coro = coro
        self.stats = stats
        self.started: float | None = None  # the first step's clock: latency runs from it

    def close(self) -> None:
        self.coro.close()
        self._file(None, failed=False)

    def _step(self, value: Any, error: BaseException | None) -> Any:
        if self.started is None:
            self.started = time.perf_counter()
        try:
            return self.coro.send(value) if error is None else self.coro.throw(error)
        except StopIteration as stop:
            self._file(stop.value, failed=False)
            raise
        except Exception:
            self._file(None, failed=True)
            raise
        except BaseException:  # a cancellation: counted, not as an error
            self._file(None, failed=False)
            raise

    def _file(self, outcome: Outcome | None, failed: bool) -> None:
        started, self.started = self.started, None
        if started is None:  # never stepped, or filed already
            return
        elapsed = time.perf_counter() - started
        if outcome is None:
            self.stats.file(elapsed, failed, None)
        else:
            self.stats.file(elapsed, outcome.failed, outcome.waited)


class Stepped(Measured):
    """``Measured`` for application code on the loop (an async view, a mounted app): each
    step is also charged the time it held the loop, and a block is reported."""

    __slots__ = ("metrics",)

    def __init__(
        self, coro: Coroutine[Any, Any, Outcome], metrics: Recorder, stats: RouteStats
    ) -> None:
        super().__init__(coro, stats)
        hook_gc()
        self.metrics = metrics

    def _step(self, value: Any, error: BaseException | None) -> Any:
        threshold = self.metrics.block_threshold
        start = usage() if threshold is not None else None
        if self.started is None:
            self.started = start.wall if start is not None else time.perf_counter()
        try:
            return super()._step(value, error)
        finally:
            self._judge(start, threshold)

    def _judge(self, start: Usage | None, threshold: float | None) -> None:
        # The charge never exceeds the wall time, so a step shorter than the threshold
        # costs one clock read here.
        if start is None or threshold is None or time.perf_counter() - start.wall <= threshold:
            return
        blocked = charge(start, usage())
        if blocked > threshold:
            self.metrics.blocked(self.stats, blocked)
