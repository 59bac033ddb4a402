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
from typing import Any, NamedTuple

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


def hook_gc() -> None:
    """Count this process's garbage collections' time from now on (once)."""
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
