"""Threads that size themselves: how many of ``max_threads`` may run the legacy app at once.

Theory of operation
-------------------

No fixed thread count serves every app. A view that waits 20 ms on a database
needs many threads (64 threads give 3,200 req/s, 8 give 400); a CPU-bound view
(a Django ORM page) loses throughput with every thread beyond two, because they
take turns holding the GIL and each hand-off costs a switch interval and a cold
cache (measured: 669 req/s with 2 threads, 443 with 32). ``max_threads`` stays the
hard ceiling on threads started; the ``Gate`` lets only ``limit`` of them hold a turn
at once, and the ``HillClimb`` controller moves ``limit`` from what it measures, as the
.NET thread pool has done since 4.0 (hill climbing on throughput, plus starvation
detection).

* A worker takes a turn before it takes a call from the pool's queue, and keeps it
  from one call to the next while calls keep coming. So at a limit of one, a busy pool
  runs its calls back to back in one thread, as a single-threaded server would; a
  gate entered after taking a call would hand the turn, and the GIL, to another
  thread after every call (measured on the Django ORM view: 1,450 req/s against
  1,110). Workers beyond the limit wait for a turn holding no call, so the queue keeps
  the calls' order.
* The pool's gate starts open (``limit`` is ``max_threads``, as a fixed pool), and
  closes only on evidence. Every ``interval`` (0.5 s) it hands the controller one
  window: the calls completed, the seconds elapsed, the process's CPU seconds, the
  part of them the workers spent (the process's less the event loop's thread's), and
  whether any call arrived while every turn was inside a call (only then does
  ``limit`` bound the throughput).
* Workers that between them use ``CONTENDED`` (half a core) or more hold the GIL
  most of the time, and fewer of them may serve more, even while the limit binds
  nothing; the controller then halves ``limit`` window by window until it binds, and
  climbs from there. A view of a few microseconds leaves the GIL to the loop (its
  workers use a fifth of a core), and its gate stays open: fewer workers would only
  take calls off the queue later (measured on hello world: 8 turns serve 6 % less
  than 32).
* The CPU seconds per second say whether the GIL has slack. A process that uses
  less than ``SLACK`` (0.7) of a core while calls queue at the gate is waiting,
  not computing: more threads will help, so ``limit`` grows (doubles below 0.35 of
  a core, by a quarter above). Near a full core the GIL is the bottleneck and more
  threads can only add contention.
* The controller compares the throughput of this window with the last one at the
  previous ``limit`` (hill climbing): a move that helped by more than ``TOLERANCE``
  (5 %) is repeated, one that hurt is undone, and a flat result moves towards
  fewer threads when the GIL is busy (same work, less contention, lower latency)
  and towards more when it has slack.
* A move that hurt is undone exactly (back to the level before it), and the
  controller then rests there: 1 window, then 2, 4, ... up to ``MAX_REST`` (16, 8 s)
  after each further probe that fails, so a limit that is right is probed less and
  less often instead of every other window. Arriving at one thread by a move that
  did not hurt rests there too, rather than bouncing straight back to two. A
  window with CPU slack (calls waiting, not computing) or a throughput that moves
  by more than ``REST_BREAK`` (20 %) ends a rest at once: the workload changed.
  For a CPU-bound view whose best count is one thread, probing every other window
  costs about 8 % of its throughput; resting brings that under 2 %.
* A window in which nothing had to wait and the workers did not contend changes
  nothing: the demand, not the limit, set the throughput.
* Starvation: a worker that waits for a turn for ``STARVATION`` (0.1 s) while calls
  are queued and no call completes raises ``limit``: doubles it when the CPU is idle
  (the running calls are blocked: long polls, slow queries, calls that wait on one
  another), else by one. So calls always make progress, as .NET injects a thread when its
  queue does not move for 500 ms; 64 blocked calls all run within 0.3 s.

A worker that keeps its turn costs each call one lock round trip at the gate; the
controller runs once per interval, in the thread that closes the window. A lane (the
thread an async view's thread-sensitive calls share for a whole request) adds a turn
from the moment it is queued until it ends: it holds its thread while the request
awaits, not the GIL, so it never waits for a turn.

``Bridge(app, adaptive_threads=False)`` removes the gate: ``max_threads`` threads
then run at once, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

# One window of measurements: long enough to hold hundreds of calls at the rates
# where the thread count matters, short enough to climb from 8 to 64 in 2 s.
DEFAULT_INTERVAL = 0.5
# Where a controller of its own starts (the pool's gate starts at max_threads): enough
# threads for a few waiting views, few enough for a CPU-bound one to lose little while
# the controller finds its level (the pool default of Python's ThreadPoolExecutor is
# min(32, cpus + 4); gunicorn's gthread example configuration uses 2-4 x cpus).
DEFAULT_START = 8
# Below this many CPU seconds per second, the GIL is idle often enough that more
# threads can overlap their waits.
SLACK = 0.7
# A throughput change smaller than this is noise.
TOLERANCE = 0.05
# A call that waits this long at the gate while no call completes is starved.
STARVATION = 0.1
# The longest rest after failed probes, in windows (8 s): a probe of a wrong level
# every 8 s costs a CPU-bound view about 1 % (.NET's hill climbing also slows its
# probing once a level stops paying).
MAX_REST = 16
# Workers that use this many CPU seconds per second between them hold the GIL most of
# the time: they contend for it, and fewer of them may serve more, whether or not any
# call waits for a turn. Below it the loop, not the workers, is what keeps the GIL busy
# (a view of a few microseconds), and the gate stays open.
CONTENDED = 0.5
# During a rest, a throughput this far from the rest's first window means the
# workload changed; a busy shared machine's noise rarely reaches it.
REST_BREAK = 0.2


@dataclass(frozen=True)
class Window:
    """What the gate measured over one interval."""

    completed: int
    seconds: float
    cpu_seconds: float  # the process's CPU time over the window (all threads)
    saturated: bool  # whether a call waited for a turn: the limit bound the throughput
    worker_cpu_seconds: float = 0.0  # the part of it not spent by the event loop's thread

    @property
    def contended(self) -> bool:
        """Whether the workers, not the loop, kept the GIL busy: fewer of them might do more."""
        return self.seconds > 0 and self.worker_cpu_seconds / self.seconds >= CONTENDED

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_load(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 1.0


class HillClimb:
    """Moves the concurrency limit between 1 and ``ceiling`` from one window to the next.

    Pure: it sees only the windows it is given, so a test can drive it exactly.
    """

    def __init__(self, ceiling: int, start: int = DEFAULT_START) -> None:
        if ceiling < 1:
            raise ValueError(f"The thread ceiling must be at least 1, not {ceiling}.")
        self.ceiling = ceiling
        self.limit = max(1, min(start, ceiling))
        self._previous: tuple[int, float] | None = None  # (limit, throughput) last window
        self._up = True
        self.resting = 0  # windows left to stay at this limit without a probe
        self._rest_for = 1  # the next rest's length: doubles after each failed probe
        self._rest_throughput = 0.0  # the first window of the current rest

    def update(self, window: Window) -> int:
        """Take one window's measurements; return the limit for the next window."""
        if not (window.saturated or window.contended) or window.completed == 0:
            self._previous = None  # demand-bound: this window says nothing about the limit
            return self.limit
        if not window.saturated and window.cpu_load >= SLACK:
            # Workers contend for the GIL, yet no call waits for a turn: the limit is above
            # what is asked of it, so no move between here and the demand can be judged.
            # Halve it, to reach the level where it binds in a few windows, not a dozen.
            self._previous = None
            self.resting = 0
            self.limit = max(1, self.limit // 2)
            return self.limit
        throughput = window.throughput
        slack = window.cpu_load < SLACK
        if self.resting and self._rests(throughput, slack):
            return self.limit
        previous = self._previous
        probe = previous is None or previous[0] == self.limit
        before = 0.0 if previous is None else previous[1]
        if probe:
            self._up = slack  # no move to judge: lean the way the GIL points
        elif throughput > before * (1 + TOLERANCE):
            self._rest_for = 1  # the last move helped: make another like it
        elif throughput < before * (1 - TOLERANCE):
            assert previous is not None
            self.limit = previous[0]  # it hurt: back to where it was, and stay a while
            self._rest()
            return self.limit
        else:
            self._up = slack
        if not probe and not self._up and self.limit <= 1:
            self._rest()  # moved down to one thread and lost nothing: stay
            return self.limit
        self._previous = (self.limit, throughput)
        self.limit = self._step(probe, window.cpu_load)
        return self.limit

    def _rest(self) -> None:
        self.resting = self._rest_for
        self._rest_for = min(self._rest_for * 2, MAX_REST)
        self._rest_throughput = 0.0
        self._previous = None  # the rest ends with a fresh probe

    def _rests(self, throughput: float, slack: bool) -> bool:
        """Spend one window of a rest; False (and no rest left) when the workload changed."""
        first = self._rest_throughput
        if not first:
            self._rest_throughput = first = throughput
        if slack or abs(throughput - first) > first * REST_BREAK:
            self.resting = 0
            self._rest_for = 1
            return False
        self.resting -= 1
        return True

    def starved(self, cpu_load: float = 1.0) -> int:
        """Calls waited and none completed: more may run, twice as many if the CPU is idle.

        An idle CPU while nothing completes means the running calls are blocked (on a
        long poll, a slow query, one another), and only more threads can help.
        """
        grown = self.limit * 2 if cpu_load < SLACK else self.limit + 1
        self.limit = min(grown, self.ceiling)
        self._previous = None
        self.resting = 0
        self._rest_for = 1
        return self.limit

    def _step(self, probe: bool, cpu_load: float) -> int:
        limit = self.limit
        if self._up:
            if limit >= self.ceiling:
                return limit  # climbed to the ceiling: stay while it keeps paying
            # Far from a busy GIL, double; closer to it, creep up by a quarter.
            grown = limit * 2 if cpu_load < SLACK / 2 else limit + max(1, limit // 4)
            return min(grown, self.ceiling)
        if limit <= 1:
            self._up = True  # at the floor: see whether a second thread pays
            return min(2, self.ceiling)
        # A probe from a standing start is small (an eighth), so a limit that is right
        # loses little to it; a move that keeps paying takes a quarter each time.
        shrunk = limit - max(1, limit // 8) if probe else min(limit - 1, int(limit * 0.75))
        return max(1, shrunk)


class Gate:
    """Lets at most ``controller.limit`` worker threads hold a turn at once, plus one per
    open lane; the others wait here, holding no call.

    A worker takes a turn before it takes a call from the pool's queue and keeps it from
    one call to the next while calls keep coming, so a busy pool at a limit of one runs
    its calls back to back in one thread, instead of handing the GIL to another thread
    after every call (each hand-off costs a switch interval and a cold cache). The queue
    keeps the calls' order: a waiting worker holds none. A worker gives its turn back
    when the limit has fallen below the turns held (``finish`` says so). The clocks are
    injectable so tests can drive windows without waiting for them.
    """

    def __init__(
        self,
        controller: HillClimb,
        interval: float = DEFAULT_INTERVAL,
        starvation: float = STARVATION,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.controller = controller
        self.interval = interval
        self.starvation = starvation
        self._clock = clock
        self._cpu_clock = cpu_clock
        # The event loop's thread's CPU clock, once the pool has seen it (watch_loop).
        self._loop_cpu_clock: Callable[[], float] | None = None
        self._reset()

    def _reset(self) -> None:
        # The condition's own lock, entered directly: a Lock's ``with`` runs in C, a
        # Condition's in Python, and the fast path takes only the lock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.turns = 0  # workers holding a turn: in a call, or about to take one
        self.waiting = 0  # workers waiting for a turn
        self.lanes = 0  # lanes queued or running: each lets one more worker through
        # Set by the pool when a call arrives while every turn is inside a call (a plain
        # flag: a write lost to a window's close only moves one window's verdict).
        self.saturated = False
        self._completed = 0  # since the window opened
        self._total_completed = 0
        self._interrupts = 0
        # Whether a waiter wakes every ``starvation`` seconds to check for it: one is
        # enough, and each wake-up of a sleeping thread takes the GIL from the loop.
        self._watched = False
        self._opened = self._clock()
        self._opened_cpu = self._cpu_clock()
        self._opened_loop_cpu = self._loop_cpu()
        self._starved_at = self._opened
        self._starved_cpu = self._opened_cpu

    @property
    def limit(self) -> int:
        return self.controller.limit

    def try_enter(self) -> bool:
        """Take a turn if one is free, without waiting."""
        with self._lock:
            if self.turns < self.controller.limit + self.lanes:
                self.turns += 1
                return True
            return False

    def enter(self, backlog: Callable[[], bool]) -> bool:
        """Wait for a turn; False if ``interrupt`` sent this worker away without one.

        ``backlog()`` says whether calls are queued: only then does a wait with no call
        completing mean the running calls are stuck (starvation), not that work is scarce.
        """
        with self._lock:
            interrupts = self._interrupts
            self.waiting += 1
            watcher = False
            try:
                while self.turns >= self.controller.limit + self.lanes:
                    if interrupts != self._interrupts:
                        return False
                    if not self._watched:
                        self._watched = watcher = True
                    if not watcher:
                        self._cond.wait()  # one waiter watches for starvation; the rest sleep
                        continue
                    seen = self._total_completed
                    if (
                        not self._cond.wait(self.starvation)
                        and seen == self._total_completed
                        and backlog()
                    ):
                        self._starve()
            finally:
                self.waiting -= 1
                if watcher:
                    self._watched = False
                    if self.waiting:
                        self._cond.notify()  # another waiter takes over the watch
            self.turns += 1
            return True

    def finish(self, lane: bool) -> bool:
        """A worker holding a turn finished a call (or a lane); True if it keeps the turn."""
        with self._lock:
            if lane:
                self.lanes -= 1
            else:
                self._completed += 1
                self._total_completed += 1
                now = self._clock()
                if now - self._opened >= self.interval:
                    self._close_window(now)
            bound = self.controller.limit + self.lanes
            if self.turns > bound:
                self.turns -= 1
                return False
            if self.waiting and self.turns < bound:
                self._cond.notify(bound - self.turns)
            return True

    def leave(self) -> None:
        """Give a turn back (the worker is leaving the pool)."""
        with self._lock:
            self.turns -= 1
            self._cond.notify()

    def open_lane(self) -> None:
        """A lane was queued: one more worker may hold a turn until it ends."""
        with self._lock:
            self.lanes += 1
            self._cond.notify()

    def close_lane(self) -> None:
        """A lane ended in a worker that holds no turn."""
        with self._lock:
            self.lanes -= 1

    def interrupt(self) -> None:
        """Send every waiting worker away without a turn (the pool is shutting down)."""
        with self._lock:
            self._interrupts += 1
            self._cond.notify_all()

    def forked(self) -> None:
        """In a forked child: no worker came along, so no turn is held or awaited."""
        self._loop_cpu_clock = None  # the pool finds the child's loop on its next call
        self._reset()

    def watch_loop(self, thread_id: int) -> None:
        """Read the CPU time of the event loop's thread (``threading.get_ident()`` there), so
        that each window tells the workers' CPU from the loop's."""
        try:
            clock_id = time.pthread_getcpuclockid(thread_id)
            time.clock_gettime(clock_id)
        except (AttributeError, OSError):  # no per-thread clocks here: windows say nothing
            return
        with self._lock:
            self._loop_cpu_clock = partial(time.clock_gettime, clock_id)
            self._opened_loop_cpu = self._loop_cpu()

    def _loop_cpu(self) -> float | None:
        clock = self._loop_cpu_clock
        if clock is None:
            return None
        try:
            return clock()
        except OSError:  # the loop's thread has ended
            self._loop_cpu_clock = None
            return None

    def _starve(self) -> None:
        # Every waiter times out together; one step per starvation period is enough.
        now = self._clock()
        elapsed = now - self._starved_at
        if elapsed >= self.starvation:
            cpu = self._cpu_clock()
            self.controller.starved((cpu - self._starved_cpu) / elapsed)
            self._starved_at, self._starved_cpu = now, cpu
            free = self.controller.limit + self.lanes - self.turns
            if free > 0:
                self._cond.notify(free)

    def _close_window(self, now: float) -> None:
        cpu = self._cpu_clock()
        loop_cpu = self._loop_cpu()
        opened_loop_cpu = self._opened_loop_cpu
        worker_cpu = 0.0
        if loop_cpu is not None and opened_loop_cpu is not None:
            worker_cpu = max((cpu - self._opened_cpu) - (loop_cpu - opened_loop_cpu), 0.0)
        saturated, self.saturated = self.saturated, False
        self.controller.update(
            Window(
                self._completed, now - self._opened, cpu - self._opened_cpu, saturated, worker_cpu
            )
        )
        self._completed = 0
        self._opened = now
        self._opened_cpu = cpu
        self._opened_loop_cpu = loop_cpu


def adaptive_gate(max_threads: int) -> Gate:
    """The default gate for a pool of ``max_threads``: open at first (every thread may run,
    as with a fixed pool), closing from there while the workers contend for the GIL."""
    return Gate(HillClimb(max_threads, start=max_threads))
