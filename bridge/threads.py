"""The handoff between the event loop and the threads that run the legacy application.

Theory of operation
-------------------

The request cycle's theory of operation (the buffers, the framing rule, who may
block, disconnects and deadlines) is at the top of ``bridge.gateway``; this module
is the thread side of it.

Who may block: the thread, on ``wsgi.input`` reads, on a full response backlog, and in
application code. The loop, never: it awaits ``receive``/``send`` and an
``asyncio.Future`` that the worker resolves with ``call_soon_threadsafe``. The worker
records the server's loop in asgiref's thread-local, as ``sync_to_async`` does, so
``async_to_sync`` in legacy code runs coroutines on the server's own loop instead of
starting a new one (the idea of "Taking Channels Async", DjangoCon Europe 2018), and
``sync_to_async(thread_sensitive=True)`` inside those coroutines comes back to the
request's own thread.

Threads: one pool of at most ``max_threads`` per ``Bridge``, started on demand;
requests never wait behind each other while a thread is free (asgiref's
``WsgiToAsgi`` sends every request of the process through one thread).
Admission (``bridge.admission``, owned by the ``Bridge``): at most ``max_threads +
max_pending`` requests may hold or wait for a thread, counted from their arrival;
the next gets ``503`` with ``Retry-After`` at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, ThreadSensitiveContext

T = TypeVar("T")

# gunicorn's gthread worker and Django's ASGI handler leave the pool size to the
# user; Python's ThreadPoolExecutor caps its default at 32 (min(32, cpus + 4)).
# 32 threads serve 32 requests that wait on a database at once, at about 8 MiB
# of (virtual) stack each.
DEFAULT_MAX_THREADS = 32

# gunicorn's listen backlog (--backlog) defaults to 2048 connections waiting for a
# worker; beyond it, new connections are refused. bridge answers 503 instead.
DEFAULT_MAX_PENDING = 2048


class ThreadPool:
    """The bounded pool the legacy application runs in, with admission control.

    Each call is one handoff each way: the loop puts ``(func, args, context)`` on a
    queue, an idle worker runs it inside a copy of the caller's ``contextvars``
    context, and hands the result back with one ``call_soon_threadsafe``. Before
    running it, the worker records the server's loop in asgiref's thread-local, as
    ``sync_to_async`` does, so ``async_to_sync`` in the legacy code runs coroutines
    on that loop. This does what ``sync_to_async(thread_sensitive=False,
    executor=...)`` does for a WSGI call, without a ``concurrent.futures.Future``,
    ``asyncio.shield`` and two context restores per request: measured here, a
    handoff through ``sync_to_async`` costs about 28 us, this one about 3 us.
    """

    def __init__(self, max_threads: int, max_pending: int) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}.")
        if max_pending < 0:
            raise ValueError(f"max_pending must be 0 or more, not {max_pending}.")
        self.max_threads = max_threads
        self.max_pending = max_pending
        self.capacity = max_threads + max_pending
        self.in_flight = 0  # calls holding or waiting for a thread; loop-only
        self._queue: SimpleQueue[_Call | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Under _lock: workers not running a call, and items put but not yet taken.
        # A new worker starts whenever the items outnumber the idle workers.
        self._idle = 0
        self._queued = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Called on the loop after each call with the seconds it waited for a thread
        # (bridge.metrics sets it); None skips the two clock reads.
        self.on_wait: Callable[[float], None] | None = None

    def has_room(self) -> bool:
        return self.in_flight < self.capacity

    @property
    def busy(self) -> int:
        return min(self.in_flight, self.max_threads)

    @property
    def waiting(self) -> int:
        return max(self.in_flight - self.max_threads, 0)

    @property
    def running(self) -> int:
        """Worker threads inside a call now, including calls whose request was cancelled."""
        return max(len(self._threads) - self._idle, 0)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads started so far (they start on demand, up to max_threads)."""
        return list(self._threads)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a pool thread, in a copy of this context; await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        on_wait = self.on_wait
        # A call that finds an idle worker waits only for the handoff: it is filed as
        # no wait, without clock reads in two threads. Only queued calls are timed.
        timing = None if on_wait is None or self._idle > self._queued else [time.perf_counter()]
        self.in_flight += 1
        try:
            self._submit((loop, future, func, args, contextvars.copy_context(), timing))
            return await future
        finally:
            self.in_flight -= 1
            if on_wait is not None:
                if timing is None:
                    on_wait(0.0)
                elif len(timing) == 2:
                    on_wait(timing[1] - timing[0])

    def _submit(self, call: _Call) -> None:
        if self._pid != os.getpid():  # a forked worker process inherits no threads
            self._threads.clear()
            self._idle = self._queued = 0
            self._pid = os.getpid()
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
        self._queue.put(call)

    def _work(self) -> None:
        local = SyncToAsync.threadlocal
        local.main_event_loop_pid = os.getpid()
        get = self._queue.get
        lock = self._lock
        while True:
            call = get()
            with lock:
                self._idle -= 1
                self._queued -= 1
            if call is None:
                return
            loop, future, func, args, context, timing = call
            if timing is not None:
                timing.append(time.perf_counter())  # the call starts: its wait ends
            # What asgiref's SyncToAsync.thread_handler records, so async_to_sync
            # in this thread finds the server's loop instead of starting its own.
            local.main_event_loop = loop
            local.task_context = None
            try:
                result = context.run(func, *args)
            except BaseException as exc:
                _resolve(loop, _set_exception, future, exc)
            else:
                _resolve(loop, _set_result, future, result)
            del call, future, args, context, timing
            with lock:
                self._idle += 1

    def request_context(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The context an async view runs in, so that its thread-sensitive
        ``sync_to_async`` calls share one thread of their own for the request."""
        return ThreadSensitiveContext()

    def shutdown(self) -> None:
        """Let every worker finish its current call and exit; new calls start new workers."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._queued += len(threads)
        for _ in threads:
            self._queue.put(None)


_Call = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    Callable[..., Any],
    tuple[Any, ...],
    contextvars.Context,
    "list[float] | None",  # [submitted, started], perf_counter(), when timed
]


def _resolve(
    loop: asyncio.AbstractEventLoop,
    setter: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    # A closed loop has nobody waiting for this result; the worker lives on.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)
