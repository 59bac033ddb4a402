"""The handoff between the event loop and the threads that run the legacy application.

Theory of operation
-------------------

The event loop owns the connection: only the loop calls ``receive`` and ``send``.
A worker thread owns the WSGI call: only the thread calls the application, iterates
its body and calls ``close()``. They meet in two buffers, each guarded by a
``threading.Condition`` that is held only for a copy, so the loop never waits on
the thread:

* ``RequestBody`` (``bridge.body``), filled by the loop and read by the thread.
  A body of up to ``request_buffer_size`` is received whole on the loop *before* a
  thread is taken (nginx does the same for gunicorn), so a slow uploader costs a
  coroutine, not a thread. A larger body streams: a loop task keeps at most
  ``DEFAULT_HIGH_WATER`` bytes ahead of the reader, and the reader blocks.

* ``Responder`` (``bridge.response``), filled by the thread and drained by the loop.
  The common case costs one handoff: a body that is a list, or that reaches its
  declared Content-Length, is *held* in the thread and handed back with the return
  value of the call; the loop then sends ``http.response.start`` and the body.
  Anything else is *pushed*: the first push commits the headers and starts a sender
  task on the loop with ``call_soon_threadsafe``; later pushes only wake the loop if
  the sender is idle. The thread blocks only when more than ``response_buffer_size``
  is queued, so a slow reader holds a thread only for responses larger than that.

Who may block: the thread, on ``wsgi.input`` reads, on a full response queue, and in
application code. The loop, never: it awaits ``receive``/``send`` and the thread's
completion through asgiref's ``sync_to_async``, which also records the server's loop
in the thread so that ``async_to_sync`` there runs coroutines on that loop instead of
starting a new one (the idea of "Taking Channels Async", DjangoCon Europe 2018).

Disconnects: while a body streams in, or a response streams out, a loop task waits
on ``receive``. ``http.disconnect`` (or ``send`` raising ``OSError``, as servers other
than uvicorn do) marks both buffers: the next ``wsgi.input`` read past the received
bytes raises ``ClientDisconnected``, and the next push of a body chunk raises it too,
so iteration stops within one chunk and ``close()`` runs in the thread at once.

Threads: one ``ThreadPoolExecutor`` of ``max_threads`` per ``Bridge``, used through
``sync_to_async(thread_sensitive=False)``; requests never share a thread queue
(asgiref's ``WsgiToAsgi`` sends every request of the process through one thread).
Admission: at most ``max_threads + max_pending`` requests may hold or wait for a
thread; the next gets ``503`` with ``Retry-After`` at once instead of queueing
without bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync

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
    """The bounded pool the legacy application runs in, with admission control."""

    def __init__(self, max_threads: int, max_pending: int) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}.")
        if max_pending < 0:
            raise ValueError(f"max_pending must be 0 or more, not {max_pending}.")
        self.max_threads = max_threads
        self.max_pending = max_pending
        self.in_flight = 0  # requests holding or waiting for a thread; loop-only
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._callers: dict[Callable[..., Any], SyncToAsync[Any, Any]] = {}

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The executor, made on first use (and again in a forked worker process)."""
        pid = os.getpid()
        if self._executor is None or self._pid != pid:
            self._executor = ThreadPoolExecutor(self.max_threads, thread_name_prefix="bridge")
            self._pid = pid
            self._callers.clear()
        return self._executor

    def has_room(self) -> bool:
        return self.in_flight < self.max_threads + self.max_pending

    @property
    def busy(self) -> int:
        return min(self.in_flight, self.max_threads)

    @property
    def waiting(self) -> int:
        return max(self.in_flight - self.max_threads, 0)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a pool thread through ``sync_to_async``; await its result."""
        executor = self.executor
        caller = self._callers.get(func)
        if caller is None:
            caller = self._callers[func] = SyncToAsync(
                func, thread_sensitive=False, executor=executor
            )
        self.in_flight += 1
        try:
            result: T = await caller(*args)
            return result
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        """Stop the threads once their work is done; a later request starts a new pool."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
            self._callers.clear()
