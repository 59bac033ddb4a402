"""The handoff between the event loop and the threads that run the legacy application.

Theory of operation
-------------------

The request cycle's theory of operation (the buffers, the framing rule, who may
block, disconnects and deadlines) is in ``bridge.wsgi`` (its ``__init__.py``); this module
is the thread side of it.

Who may block: the thread, on ``wsgi.input`` reads, on a full response backlog, and in
application code. The loop, never: it awaits ``receive``/``send`` and an
``asyncio.Future`` that the worker resolves through ``_Results``: one
``call_soon_threadsafe`` wakes the loop for every result that arrives before it runs,
so a busy loop pays one wake-up per batch of completed calls. The worker
records the server's loop in asgiref's thread-local, as ``sync_to_async`` does, so
``async_to_sync`` in legacy code runs coroutines on the server's own loop instead of
starting a new one (the idea of "Taking Channels Async", DjangoCon Europe 2018), and
``sync_to_async(thread_sensitive=True)`` inside those coroutines comes back to the
request's own thread.

Threads: one budget. Every thread a request uses comes from one pool of at most
``max_threads`` per ``Bridge``, started on demand: the WSGI call of a legacy request
or a ``def`` view, and the thread-sensitive ``sync_to_async`` calls of an ``async``
view (``thread_sensitive=True`` is asgiref's default, and Django's ORM needs it).
Those go to the request's ``Lane``: the first call queues for a pool thread exactly
as a legacy request does, and that thread then stays with the request, running its
calls one at a time, until the view returns. So successive calls of one request land
on one thread (Django keeps its connection in a thread-local, as under the legacy
app), and 200 concurrent async views under ``max_threads=4`` use 4 threads, not 200
(asgiref's plain ``ThreadSensitiveContext`` starts a thread per request). A
thread-sensitive call made after its view returned, by a task the view left running,
is refused with ``RuntimeError`` rather than given a thread outside the pool.
Requests never wait behind each other while a thread is free (asgiref's
``WsgiToAsgi`` sends every request of the process through one thread).
``sync_to_async(thread_sensitive=False)`` runs in the loop's default executor, which
bridge does not own.

Cancellation: a call is claimed under the pool's lock, either by the worker that
starts it or by the loop that cancels it, never both, so a call whose request was
cancelled before a thread took it never starts (a queued ``POST`` is not executed
later). A lane's calls are ``concurrent.futures`` futures, which asgiref cancels the
same way. A call already running cannot be interrupted (Python has no way to stop a
thread), but the coroutines it runs on the loop through ``async_to_sync`` can: the
worker gives asgiref a ``task_context`` list, in which ``async_to_sync`` records the
task it starts on the loop; a cancelled request cancels those tasks, and one that
starts after the cancellation is cancelled as it records itself.

asgiref: bridge relies on two of its internals, ``SyncToAsync.threadlocal`` (the
server's loop and the ``task_context`` list, what ``SyncToAsync.thread_handler``
records) and, before asgiref 3.13 added ``ThreadSensitiveContext(executor=...)``,
its map of contexts to executors. Before 3.13, a bridge called from ``async_to_sync``
sends its async views' thread-sensitive calls to the calling thread's
``CurrentThreadExecutor`` (asgiref puts an inherited one ahead of any context), not to
the lane; 3.13 lets the lane hide it. pyproject pins the range tested at both ends.

Admission (``bridge.threads.admission``, owned by the ``Bridge``): at most ``max_threads +
max_pending`` requests may hold or wait for a thread, counted once their buffered body is in;
the next gets ``503`` with ``Retry-After`` at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext

if TYPE_CHECKING:
    from .sizing import Gate

T = TypeVar("T")

# gunicorn's gthread worker and Django's ASGI handler leave the pool size to the
# user; Python's ThreadPoolExecutor caps its default at 32 (min(32, cpus + 4)).
# 32 threads serve 32 requests that wait on a database at once, at about 8 MiB
# of (virtual) stack each.
DEFAULT_MAX_THREADS = 32

# gunicorn's listen backlog (--backlog) defaults to 2048 connections waiting for a
# worker; beyond it, new connections are refused. bridge answers 503 instead.
DEFAULT_MAX_PENDING = 2048

# asgiref 3.13 takes the executor of a ThreadSensitiveContext as an argument; before,
# bridge files its lane in asgiref's map of contexts to executors itself.
_EXECUTOR_ARGUMENT = "executor" in inspect.signature(ThreadSensitiveContext).parameters

# The life of a call, changed only under the pool's lock.
_QUEUED, _STARTED, _CANCELLED = 0, 1, 2


class ThreadPool:
    """The bounded pool the legacy application runs in, with admission control.

    Each call is one handoff each way: the loop puts a ``_Call`` on a queue, an idle
    worker runs it inside a copy of the caller's ``contextvars`` context, and hands
    the result back through ``_Results``, which wakes the loop once per batch of
    completed calls rather than once per call. Before running it, the worker
    records the server's loop in asgiref's thread-local, as ``sync_to_async`` does, so
    ``async_to_sync`` in the legacy code runs coroutines on that loop. This does what
    ``sync_to_async(thread_sensitive=False, executor=...)`` does for a WSGI call,
    without a ``concurrent.futures.Future``, ``asyncio.shield`` and two context
    restores per request: measured here, a handoff through ``sync_to_async`` costs
    about 28 us, this one about 3 us.
    """

    def __init__(self, max_threads: int, max_pending: int) -> None:
        # Both checked once, as Bridge options (bridge.options).
        self.max_threads = max_threads
        self.max_pending = max_pending
        self.in_flight = 0  # calls of run() holding or waiting for a thread; loop-only
        self._queue: SimpleQueue[_Call | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Under _lock: workers not running a call (taking one, or waiting at the gate for
        # a turn), items put but not yet taken, and the state of each call. A new worker
        # starts whenever the items outnumber the idle workers.
        self._idle = 0
        self._queued = 0
        self._lock = threading.Lock()
        # Bumped by shutdown(): a worker of an earlier generation takes no more turns.
        self._generation = 0
        _POOLS.add(self)
        self._results: _Results | None = None  # the way back to the loop of the last run()
        # How many calls may run at once, below max_threads (bridge.threads.sizing); None: all.
        self.gate: Gate | None = None

    @property
    def busy(self) -> int:
        """Threads inside a call now: a WSGI call, a sync view, or a request's lane."""
        return self.running

    @property
    def waiting(self) -> int:
        """Calls and lanes queued for a thread now (a read without the lock: a gauge)."""
        return max(self._queued - self._ready(), 0)

    def _ready(self) -> int:
        """Idle workers that may take a call now: not waiting at the gate for a turn."""
        gate = self.gate
        return self._idle if gate is None else self._idle - gate.waiting

    @property
    def running(self) -> int:
        """Worker threads inside a call now, including calls whose request was cancelled."""
        return max(len(self._threads) - self._idle, 0)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far (they start on demand, up to max_threads)."""
        return list(self._threads)

    async def run(
        self,
        func: Callable[..., T],
        *args: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        waits: Waits | None = None,
    ) -> T:
        """Run ``func(*args)`` in a pool thread, in a copy of this context; await its result.

        ``waits``: the request's record, whose ``waited`` grows by the seconds the call
        waited for a thread (bridge.metrics files it with the request's route).

        Cancelled before a thread took it, the call never starts; cancelled later, the
        coroutines it started on the loop with ``async_to_sync`` are cancelled. ``loop``
        is the running loop, when the caller has it at hand: on CPython 3.11
        ``asyncio.get_running_loop()`` asks ``getpid()`` of the kernel every time.
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        results = self._results_for(loop)
        # A call that finds an idle worker waits only for the handoff: it is filed as
        # no wait, without clock reads in two threads. Only queued calls are timed.
        timing = None if waits is None or self._ready() > self._queued else [time.perf_counter()]
        call = _Call(results, future, func, args, contextvars.copy_context(), timing)
        self.in_flight += 1
        try:
            self._submit(call)
            return await future
        except asyncio.CancelledError:
            if not self.withdraw(call) and call.tasks is not None:
                call.tasks.cancel()
            raise
        finally:
            self.in_flight -= 1
            if waits is not None:
                waited = waits.waited or 0.0
                if timing is None:
                    waits.waited = waited
                elif len(timing) == 2:  # not when withdrawn before it started
                    waits.waited = waited + timing[1] - timing[0]

    def borrow(self, func: Callable[[], object]) -> _Call:
        """Queue ``func()`` for a pool thread, with no result to wait for (a lane's loop);
        ``withdraw`` the returned call to give up its turn."""
        results = self._results_for(asyncio.get_running_loop())
        call = _Call(results, None, func, (), contextvars.Context(), None)
        if self.gate is not None:
            self.gate.open_lane()  # a lane holds its thread while the request awaits
        self._submit(call)
        return call

    def _results_for(self, loop: asyncio.AbstractEventLoop) -> _Results:
        results = self._results
        if results is None or results.loop is not loop:
            results = self._results = _Results(loop)
            if self.gate is not None:
                self.gate.watch_loop(threading.get_ident())  # on the loop's thread, here
        return results

    def withdraw(self, call: _Call) -> bool:
        """Cancel ``call`` if no thread has started it; True if it will never start."""
        with self._lock:
            if call.state == _QUEUED:
                call.state = _CANCELLED
            return call.state == _CANCELLED

    def _forked(self) -> None:
        """In a forked child: the parent's workers did not come along, so start afresh
        (a new lock too, in case a parent's thread held it at the fork)."""
        self._threads.clear()
        self._idle = self._queued = 0
        self._lock = threading.Lock()
        self._queue = SimpleQueue()
        self._results = None
        if self.gate is not None:
            self.gate.forked()

    def _submit(self, call: _Call) -> None:
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and len(self._threads) < self.max_threads
            if start:
                self._idle += 1  # the new worker, counted before it reaches the queue
        if start:
            thread = threading.Thread(
                target=self._work, name=f"bridge-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        gate = self.gate
        if gate is not None and len(self._threads) - self._idle >= gate.limit + gate.lanes:
            # Every turn is inside a call: this call waits for one, so the limit binds. (Calls
            # queued while turns are free only wait for a worker to get the GIL.)
            gate.saturated = True
        self._queue.put(call)

    def _work(self) -> None:
        local = SyncToAsync.threadlocal
        local.main_event_loop_pid = os.getpid()
        get = self._queue.get
        lock = self._lock
        generation = self._generation
        # bridge.threads.sizing: a worker takes a turn before it takes a call and keeps it
        # while calls keep coming; a lane (no future) adds a turn while it is queued or
        # running, since it holds its thread while the request awaits, not the GIL.
        gate = self.gate
        turn = False
        while True:
            if not turn and gate is not None and generation == self._generation:
                turn = gate.try_enter() or gate.enter(self._backlog)
            call = get()
            with lock:
                self._idle -= 1
                self._queued -= 1
                if call is None:
                    break
                # Claimed here or withdrawn by the loop, under the same lock.
                started = call.state == _QUEUED
                if started:
                    call.state = _STARTED
                    call.tasks = _Tasks()
            handoff = call.run(local) if started else None
            lane = call.future is None
            results = call.results
            del call
            with lock:
                self._idle += 1
            if handoff is not None:
                # Handed back once the worker counts itself idle, so the loop that wakes
                # to the result never finds this worker still busy with it.
                results.put(*handoff)
                del handoff
            if turn:
                assert gate is not None
                turn = gate.finish(lane)
            elif lane and gate is not None:
                gate.close_lane()
        if turn:
            assert gate is not None
            gate.leave()

    def _backlog(self) -> bool:
        """Whether calls are queued (read without the lock, by a worker waiting for a turn)."""
        return self._queued > 0

    def request_context(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The context an async view runs in: its thread-sensitive ``sync_to_async``
        calls share one pool thread, borrowed for the request (its ``Lane``)."""
        return RequestContext(Lane(self))

    def shutdown(self) -> None:
        """Let every worker finish its current call and exit; new calls start new workers."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._queued += len(threads)
            self._generation += 1
        if self.gate is not None:
            self.gate.interrupt()  # a worker waiting for a turn goes on to its None
        for _ in threads:
            self._queue.put(None)


class Waits(Protocol):
    """A request's record of the time its calls waited for a thread (None: no call)."""

    waited: float | None


class _Call:
    """One call for a worker: what to run, where to resolve it, and its state."""

    __slots__ = ("args", "context", "func", "future", "results", "state", "tasks", "timing")

    def __init__(
        self,
        results: _Results,
        future: asyncio.Future[Any] | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        context: contextvars.Context,
        timing: list[float] | None,  # [submitted, started], perf_counter(), when timed
    ) -> None:
        self.results = results
        self.future = future
        self.func = func
        self.args = args
        self.context = context
        self.timing = timing
        self.state = _QUEUED
        # asgiref's task_context, made by the worker as it claims the call (under the
        # pool's lock, so a cancellation that finds the call started finds it too).
        self.tasks: _Tasks | None = None

    def run(self, local: threading.local) -> _Handoff | None:
        """Run in the worker thread that claimed this call; return what resolves its
        future (None for a lane), for the worker to hand back once it counts itself idle."""
        if self.timing is not None:
            self.timing.append(time.perf_counter())  # the call starts: its wait ends
        # What asgiref's SyncToAsync.thread_handler records, so async_to_sync in this
        # thread finds the server's loop instead of starting its own, and files the
        # task it starts there where a cancellation can reach it.
        results = self.results
        local.main_event_loop = results.loop
        local.task_context = self.tasks
        future = self.future
        try:
            result = self.context.run(self.func, *self.args)
        except BaseException as exc:
            return None if future is None else (_set_exception, future, exc)
        else:
            return None if future is None else (_set_result, future, result)
        finally:
            local.task_context = None
            del self.func, self.args  # a lane's turn would otherwise hold the lane


class _Tasks(list["asyncio.Task[Any]"]):
    """asgiref's ``task_context``: ``async_to_sync`` appends the task it starts on the
    loop (and removes it), on the loop. Once cancelled, a task that appends itself is
    cancelled at once: it started after its request was cancelled."""

    cancelled = False

    def append(self, task: asyncio.Task[Any]) -> None:
        super().append(task)
        if self.cancelled:
            task.cancel()

    def cancel(self) -> None:
        """On the loop: cancel the tasks running now and any that start later."""
        self.cancelled = True
        for task in list(self):
            task.cancel()


_LaneItem = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Lane(Executor):
    """One request's thread for its thread-sensitive ``sync_to_async`` calls.

    The first call queues for a pool thread like a legacy request; the thread then
    stays with the request and runs its calls one at a time, in order, until the
    request ends (``shutdown``). A call cancelled before it starts never runs; a lane
    whose request ended before it got a thread never takes one. ``submit`` and
    ``shutdown`` run on the loop (asgiref calls ``loop.run_in_executor``).
    """

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._calls: SimpleQueue[_LaneItem | None] = SimpleQueue()
        self._turn: _Call | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError(
                "A thread-sensitive sync_to_async call was made after its request ended; "
                "await every such call (and the tasks that make them) before the view returns."
            )
        future: Future[T] = Future()
        self._calls.put((future, fn, args, kwargs))
        if self._turn is None:
            self._turn = self._pool.borrow(self._serve)
        return future

    def _serve(self) -> None:
        """The lane's loop, in the borrowed pool thread."""
        get = self._calls.get
        while (item := get()) is not None:
            future, fn, args, kwargs = item
            del item
            if future.set_running_or_notify_cancel():  # False: cancelled while queued
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result
            del future, fn, args, kwargs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the lane; never blocks (the loop calls it). Calls already submitted still
        run in order, unless the lane never got its thread: then they are cancelled."""
        if self._closed:
            return
        self._closed = True
        turn = self._turn
        if turn is None:
            return
        if self._pool.withdraw(turn):
            while not self._calls.empty():
                item = self._calls.get_nowait()
                if item is not None:
                    item[0].cancel()
        else:
            self._calls.put(None)  # the thread goes back to the pool after the last call


class RequestContext(ThreadSensitiveContext):
    """asgiref's ``ThreadSensitiveContext`` with the request's ``Lane`` as its executor;
    on exit the lane ends and its thread returns to the pool."""

    def __init__(self, lane: Lane) -> None:
        if _EXECUTOR_ARGUMENT:
            super().__init__(executor=lane)
        else:  # asgiref < 3.13
            super().__init__()
        self.lane = lane
        self._hid = False  # asgiref's own __aenter__ ran: it hid an inherited executor

    async def __aenter__(self) -> RequestContext:
        # asgiref 3.13 hides an inherited CurrentThreadExecutor (a bridge called from
        # async_to_sync) by writing None over it, and writes it back on exit: in a task
        # that had none, the second write stays in the task's context for as long as
        # the request lives (an open stream's 0.4 KiB). Only a hiding needs asgiref's.
        if _EXECUTOR_ARGUMENT and getattr(AsyncToSync.executors, "current", None) is not None:
            self._hid = True
            await super().__aenter__()  # type: ignore[no-untyped-call]
        else:
            # What 3.13's __aenter__ does with an executor: this context, and the lane
            # as its executor, even inside an enclosing ThreadSensitiveContext.
            self.token = SyncToAsync.thread_sensitive_context.set(self)
            SyncToAsync.context_to_thread_executor[self] = self.lane
        return self

    async def __aexit__(self, exc: Any, value: Any, tb: Any) -> None:
        try:
            if self._hid:
                await super().__aexit__(exc, value, tb)  # type: ignore[no-untyped-call]
            elif self.token is not None:
                # The lane stays filed under this context (a weak key: it goes with the
                # context), so a task that outlives the request and calls again is
                # refused by the lane rather than given a new thread by asgiref.
                SyncToAsync.thread_sensitive_context.reset(self.token)
                self.token = None
        finally:
            self.lane.shutdown(wait=False)


# Every pool of this process, for the fork hook below.
_POOLS: weakref.WeakSet[ThreadPool] = weakref.WeakSet()


def _after_fork() -> None:
    for pool in list(_POOLS):
        pool._forked()


# A forked child (gunicorn's workers after --preload, multiprocessing) inherits no
# threads; checking os.getpid() on every call instead would be a system call a request.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


_Setter = Callable[["asyncio.Future[Any]", Any], None]
_Handoff = tuple[_Setter, "asyncio.Future[Any]", Any]


class _Results:
    """Completed calls on their way back to one event loop, woken once per batch.

    The first result put while no wake-up is pending schedules one
    (``call_soon_threadsafe``: a lock, a self-pipe write and a loop iteration); every
    result put before the loop runs it rides along. The loop clears the flag before
    it takes the results, so a result put meanwhile is either taken now or schedules
    the next wake-up: none is left behind. ``deque.append`` and ``popleft`` are atomic,
    so the worker's side takes no lock.
    """

    __slots__ = ("_items", "_scheduled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[_Setter, asyncio.Future[Any], Any]] = deque()
        self._scheduled = False

    def put(self, setter: _Setter, future: asyncio.Future[Any], value: Any) -> None:
        """In a worker: hand ``value`` to ``future`` through ``setter``, on the loop."""
        self._items.append((setter, future, value))
        if self._scheduled:
            return
        self._scheduled = True
        # A closed loop has nobody waiting for this result; the worker lives on.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: resolve every future whose result has arrived."""
        self._scheduled = False
        items = self._items
        while items:
            setter, future, value = items.popleft()
            setter(future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)
