"""The blocking detector: drive an async view one step at a time and blame only real blocking.

A step is one ``send()`` into the coroutine, the stretch it runs on the loop before
it next awaits. Its wall time alone is a poor witness: on a busy process a step
that does almost nothing can take 100 ms of wall time without the view being at
fault, and blaming the view for it sends its authors hunting for a bug they do not
have. Theory of operation: a step's wall time is the sum of

* its own CPU time (``RUSAGE_THREAD`` user + system, what ``time.thread_time()``
  reads), *minus* the garbage collections that ran in this thread meanwhile: a
  full collection of a heap that holds ten thousand connections takes tens of ms
  and lands in whichever step happened to allocate the object that crossed the
  threshold (counted with a ``gc.callbacks`` hook, two clock reads per collection);
* time the thread was runnable but not running: the kernel preempted it for another
  process (the load generator, another worker). The thread made no *voluntary*
  context switch for this, so a step with none is never blamed for its off-CPU time;
* time it waited voluntarily: a ``time.sleep``, a blocking socket or database call,
  a lock, *or the GIL* held by a worker thread (each reacquisition after a call that
  released it may wait a switch interval, 5 ms, behind a busy thread, longer when
  the kernel preempts that thread while it holds the GIL). The GIL wait cannot be
  measured, but two bounds can: the CPU time the process's other threads used
  during the step, and two switch intervals per voluntary switch (a hand-off costs
  about one interval for the drop request and one for an unlucky holder). The
  larger of the two is excused.

So a step is charged ``own CPU - GC + max(0, voluntary wait - excuse)`` and reported
when that passes ``Metrics.block_threshold``. A CPU-bound view is charged its CPU;
``time.sleep(0.2)`` is charged about 0.19 s on a quiet process (one switch, 10 ms
excused); a burst of connections (GC, preemption, GIL hand-offs to the threads
serving legacy pages) is charged almost nothing. The price of the excuses: a view
that sleeps while other threads burn as much CPU, or that makes many blocking calls
of a few ms each, is not reported. The detector prefers missing a block at a busy
moment to blaming a view for the server's own work; a view that blocks for long
does so at quiet moments too, and is reported then.

The common step costs two ``perf_counter()`` calls, one ``getrusage`` and one
``process_time()``; the rest is computed only for steps whose wall time already
passed the threshold (the charge never exceeds the wall time).
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ..wsgi.cycle import Outcome
    from .values import Recorder, RouteStats

# Linux has per-thread resource usage (CPU time and context switches in one call);
# elsewhere the thread's CPU clock is read and every off-CPU moment counts as a wait.
_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)

# How many switch intervals (sys.getswitchinterval(), 5 ms) one wait may have spent
# getting the GIL back: one for the drop request, one for a holder that was preempted.
HAND_OFF_SWITCH_INTERVALS = 2


class _GCTime(threading.local):
    """Seconds spent in garbage collection by the current thread, from ``gc.callbacks``."""

    total = 0.0
    started = 0.0


_gc_time = _GCTime()
_gc_hooked = False


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_time.started = time.perf_counter()
    else:
        _gc_time.total += time.perf_counter() - _gc_time.started


def _hook_gc() -> None:
    global _gc_hooked
    if not _gc_hooked:
        _gc_hooked = True
        gc.callbacks.append(_on_gc)


class Usage(NamedTuple):
    """One reading of the clocks a step is judged by, all in seconds."""

    wall: float
    thread_cpu: float
    process_cpu: float
    voluntary_switches: int  # -1 where the platform cannot count them
    gc: float


def usage() -> Usage:
    """Read the clocks now, for the current thread."""
    wall = time.perf_counter()
    if _RUSAGE_THREAD is not None:
        own = resource.getrusage(_RUSAGE_THREAD)
        thread_cpu, switches = own.ru_utime + own.ru_stime, own.ru_nvcsw
    else:  # pragma: no cover - not Linux
        thread_cpu, switches = time.thread_time(), -1
    return Usage(wall, thread_cpu, time.process_time(), switches, _gc_time.total)


def charge(start: Usage, end: Usage) -> float:
    """The seconds of a step's wall time that its own code blocked the loop for.

    See the module docstring for the rule; this is the rule, pure, so it can be
    tested reading by reading.
    """
    wall = max(end.wall - start.wall, 0.0)
    own = max(end.thread_cpu - start.thread_cpu, 0.0)
    collecting = max(end.gc - start.gc, 0.0)
    cpu = max(own - collecting, 0.0)
    off_cpu = max(wall - own, 0.0)
    if start.voluntary_switches >= 0 and end.voluntary_switches == start.voluntary_switches:
        waited = 0.0  # never gave up the CPU itself: preempted, not blocking
    else:
        waited = off_cpu
    others = max(end.process_cpu - start.process_cpu - own, 0.0)
    switches = max(end.voluntary_switches - start.voluntary_switches, 1)
    excuse = max(others, switches * HAND_OFF_SWITCH_INTERVALS * sys.getswitchinterval())
    return min(cpu + max(waited - excuse, 0.0), wall)


class Stepped:
    """``Metrics.measure`` for code on the loop: drive ``coro`` as a task would, charge
    each step it takes, and file its outcome under ``stats`` when it ends.

    One object rather than a measuring coroutine around a stepping generator: an open
    stream keeps it and one clock reading, not two suspended frames."""

    __slots__ = ("coro", "metrics", "started", "stats")

    def __init__(
        self, coro: Coroutine[Any, Any, Outcome], metrics: Recorder, stats: RouteStats
    ) -> None:
        _hook_gc()
        self.coro = coro
        self.metrics = metrics
        self.stats = stats
        self.started: float | None = None  # the first step's clock: latency runs from it

    def __await__(self) -> Generator[Any, Any, Outcome]:
        return self

    # The iterator an ``await`` drives: CPython sends ``None`` through ``__next__``,
    # any other value through ``send``, and passes ``throw`` and ``close`` on.

    def __iter__(self) -> Generator[Any, Any, Outcome]:
        return self

    def __next__(self) -> Any:
        return self._step(None, None)

    def send(self, value: Any) -> Any:
        return self._step(value, None)

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        # A cancellation, thrown into the coroutine as its next step.
        if value is None:
            value = typ() if isinstance(typ, type) else typ
        return self._step(None, value)

    def close(self) -> None:
        self.coro.close()
        self._file(None, failed=False)

    def _step(self, value: Any, error: BaseException | None) -> Any:
        threshold = self.metrics.block_threshold
        start = usage() if threshold is not None else None
        if self.started is None:
            self.started = start.wall if start is not None else time.perf_counter()
        try:
            signal = self.coro.send(value) if error is None else self.coro.throw(error)
        except StopIteration as stop:
            self._judge(start, threshold)
            self._file(stop.value, failed=False)
            raise
        except Exception:
            self._judge(start, threshold)
            self._file(None, failed=True)
            raise
        except BaseException:  # a cancellation: counted, not as an error
            self._judge(start, threshold)
            self._file(None, failed=False)
            raise
        self._judge(start, threshold)
        return signal

    def _judge(self, start: Usage | None, threshold: float | None) -> None:
        # The charge never exceeds the wall time, so a step shorter than the threshold
        # costs one clock read here.
        if start is None or threshold is None or time.perf_counter() - start.wall <= threshold:
            return
        blocked = charge(start, usage())
        if blocked > threshold:
            self.metrics.blocked(self.stats, blocked)

    def _file(self, outcome: Outcome | None, failed: bool) -> None:
        started, self.started = self.started, None
        if started is None:  # never stepped, or filed already
            return
        elapsed = time.perf_counter() - started
        if outcome is None:
            self.stats.file(elapsed, failed, None)
        else:  # Outcome.failed, without the call
            self.stats.file(elapsed, outcome.status >= 500 or outcome.cut, outcome.waited)
