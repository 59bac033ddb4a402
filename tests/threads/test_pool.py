"""The thread pool: one thread budget, parallelism, admission, cancellation, context and the
server's loop."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any
from wsgiref.validate import validator

import pytest
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.threads.pool import ThreadPool
from bridge.threads.sizing import Gate, HillClimb
from tests.asgi import Client, http_scope

Environ = dict[str, Any]


def concurrent_requests(bridge: Bridge, count: int) -> list[Client]:
    async def main() -> list[Client]:
        clients = [Client() for _ in range(count)]
        await asyncio.gather(*(c.run(bridge, http_scope(), timeout=20) for c in clients))
        return clients

    return asyncio.run(main())


def test_max_threads_bounds_concurrency_to_exactly_that_many() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    clients = concurrent_requests(Bridge(validator(app), max_threads=4), 16)
    assert [c.status for c in clients] == [200] * 16
    assert peak == 4


def test_64_blocking_requests_run_in_parallel() -> None:
    barrier = threading.Barrier(64, timeout=10)

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        # Every request waits until all 64 are inside the app at the same time:
        # this completes only if none of them is queued behind another.
        barrier.wait()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    clients = concurrent_requests(Bridge(validator(app), max_threads=64), 64)
    assert [c.status for c in clients] == [200] * 64
    assert len({c.body for c in clients}) == 64


def test_requests_past_max_pending_get_503_with_retry_after() -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridge = Bridge(validator(app), max_threads=2, max_pending=3, retry_after=7)

    async def main() -> list[Client]:
        clients = [Client() for _ in range(8)]
        tasks = [asyncio.ensure_future(c.run(bridge, http_scope())) for c in clients]
        # The three past the limit are refused at once, while the others wait.
        while sum(bool(c.sent) for c in clients) < 3:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks)
        return clients

    clients = asyncio.run(main())
    assert sorted(c.status for c in clients) == [200] * 5 + [503] * 3
    assert {c.headers[b"retry-after"] for c in clients if c.status == 503} == {b"7"}


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def test_contextvars_reach_the_application() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [request_id.get("unset").encode()]

    async def main() -> bytes:
        request_id.set("req-42")
        client = Client()
        await client.run(Bridge(validator(app)), http_scope())
        return client.body

    assert asyncio.run(main()) == b"req-42"


def test_async_to_sync_in_the_app_runs_on_the_servers_loop() -> None:
    seen: dict[str, Any] = {}

    async def lookup() -> str:
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.current_thread()
        return "from the loop"

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen["app_thread"] = threading.current_thread()
        text = async_to_sync(lookup)()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]

    async def main() -> tuple[asyncio.AbstractEventLoop, bytes]:
        client = Client()
        await client.run(Bridge(validator(app)), http_scope())
        return asyncio.get_running_loop(), client.body

    loop, body = asyncio.run(main())
    assert body == b"from the loop"
    assert seen["loop"] is loop
    assert seen["thread"] is threading.main_thread()
    assert seen["app_thread"] is not threading.main_thread()


def test_the_event_loop_is_not_blocked_by_the_app() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        time.sleep(0.3)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow"]

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.ensure_future(ticker())
        await Client().run(Bridge(validator(app)), http_scope())
        tick.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_shutdown_stops_the_workers_and_a_later_request_starts_new_ones() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    bridge = Bridge(validator(app), max_threads=3)
    concurrent_requests(bridge, 6)
    workers = bridge.pool.threads
    assert 1 <= len(workers) <= 3
    bridge.pool.shutdown()
    for worker in workers:
        worker.join(5)
    assert not any(worker.is_alive() for worker in workers)
    assert [c.status for c in concurrent_requests(bridge, 4)] == [200] * 4
    bridge.pool.shutdown()


def test_an_exception_in_the_thread_reaches_the_loop_with_its_traceback() -> None:
    def fail() -> None:
        raise KeyError("missing")

    async def main() -> BaseException:
        pool = Bridge(validator(lambda e, s: [])).pool
        try:
            await pool.run(fail)
        except KeyError as exc:
            return exc
        raise AssertionError("no exception")

    exc = asyncio.run(main())
    assert exc.__traceback__ is not None
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "fail" in frames


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait on the loop until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


def ok_app(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_thread_sensitive_calls_of_200_async_views_run_on_max_threads_threads() -> None:
    bridge = Bridge(validator(ok_app), max_threads=4)
    lock = threading.Lock()
    before = set(threading.enumerate())
    used: set[threading.Thread] = set()
    peak = 0

    def query() -> str:
        nonlocal peak
        with lock:
            used.add(threading.current_thread())
            peak = max(peak, len(set(threading.enumerate()) - before))
        time.sleep(0.002)
        return "row"

    @bridge.route("/query")
    async def view(request: Request) -> str:
        return await sync_to_async(query)()

    async def main() -> list[Client]:
        clients = [Client() for _ in range(200)]
        await asyncio.gather(*(c.run(bridge, http_scope("/query"), timeout=60) for c in clients))
        return clients

    clients = asyncio.run(main())
    assert [c.status for c in clients] == [200] * 200
    assert len(used) <= 4, f"{len(used)} threads ran the calls"
    assert used <= set(bridge.pool.threads)
    assert peak <= 4, f"{peak} threads were started"
    # Every lane gave its thread back when its view returned.
    deadline = time.monotonic() + 5
    while bridge.pool.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bridge.pool.running == 0
    bridge.pool.shutdown()


def test_successive_thread_sensitive_calls_of_one_request_share_its_thread() -> None:
    bridge = Bridge(validator(ok_app), max_threads=3)

    @bridge.route("/three")
    async def view(request: Request) -> list[int]:
        idents = []
        for _ in range(3):
            idents.append(await sync_to_async(threading.get_ident)())
            await asyncio.sleep(0.001)  # let the other requests' calls interleave
        return idents

    async def main() -> list[Client]:
        clients = [Client() for _ in range(30)]
        await asyncio.gather(*(c.run(bridge, http_scope("/three"), timeout=30) for c in clients))
        return clients

    clients = asyncio.run(main())
    assert [c.status for c in clients] == [200] * 30
    replies = [json.loads(c.body) for c in clients]
    assert all(len(set(idents)) == 1 for idents in replies), replies
    assert len({idents[0] for idents in replies}) <= 3
    bridge.pool.shutdown()


def test_a_request_cancelled_while_queued_for_a_thread_never_runs() -> None:
    release = threading.Event()
    inside = threading.Event()
    charges = 0

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        nonlocal charges
        if environ["PATH_INFO"] == "/charge-card":
            charges += 1
        elif environ["PATH_INFO"] == "/slow":
            inside.set()
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridge = Bridge(validator(app), max_threads=1)

    async def main() -> list[int]:
        slow = Client()
        first = asyncio.ensure_future(slow.run(bridge, http_scope("/slow")))
        await until(inside.is_set, "the first request is inside")
        charge = asyncio.ensure_future(
            Client().run(bridge, http_scope("/charge-card", method="POST"))
        )
        await until(lambda: bridge.pool.waiting >= 1, "a call waits for the thread")
        charge.cancel()
        await asyncio.gather(charge, return_exceptions=True)
        release.set()
        await first
        # A request queued behind the cancelled one: once it is answered, the worker
        # has taken (and skipped) the cancelled call.
        after = Client()
        await after.run(bridge, http_scope("/"))
        return [slow.status, after.status]

    assert asyncio.run(main()) == [200, 200]
    assert charges == 0
    bridge.pool.shutdown()


def test_a_thread_sensitive_call_cancelled_while_queued_never_runs() -> None:
    release = threading.Event()
    inside = threading.Event()
    charges = 0

    def hold() -> None:
        inside.set()
        release.wait(10)

    def charge() -> None:
        nonlocal charges
        charges += 1

    bridge = Bridge(validator(ok_app), max_threads=1)

    @bridge.route("/hold")
    async def hold_view(request: Request) -> str:
        await sync_to_async(hold)()
        return "held"

    @bridge.route("/charge-card", methods=["POST"])
    async def charge_view(request: Request) -> str:
        await sync_to_async(charge)()
        return "charged"

    async def main() -> int:
        holder = Client()
        first = asyncio.ensure_future(holder.run(bridge, http_scope("/hold")))
        await until(inside.is_set, "the first request is inside")
        charging = asyncio.ensure_future(
            Client().run(bridge, http_scope("/charge-card", method="POST"))
        )
        await until(lambda: bridge.pool.waiting >= 1, "a call waits for the thread")
        charging.cancel()
        await asyncio.gather(charging, return_exceptions=True)
        release.set()
        await first
        after = Client()
        await after.run(bridge, http_scope("/hold"))
        return after.status

    assert asyncio.run(main()) == 200
    assert charges == 0
    bridge.pool.shutdown()


def cancelled_coroutine_test(*, start_after_cancel: bool) -> float:
    """A legacy app awaits a 3 s coroutine through async_to_sync; the request is
    cancelled; returns how long the coroutine ran on after the cancellation."""
    inside = threading.Event()
    proceed = threading.Event()
    observed: dict[str, float] = {}

    async def lookup() -> str:
        try:
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            observed["at"] = time.monotonic()
            raise
        observed["at"] = time.monotonic()
        return "done"

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        inside.set()
        if start_after_cancel:
            proceed.wait(10)
        text = async_to_sync(lookup)()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]

    bridge = Bridge(validator(app), max_threads=1)

    async def main() -> float:
        task = asyncio.ensure_future(Client().run(bridge, http_scope()))
        await until(inside.is_set, "the first request is inside")
        if not start_after_cancel:
            await asyncio.sleep(0.1)  # the coroutine is running on this loop
        task.cancel()
        cancelled = time.monotonic()
        proceed.set()
        await asyncio.gather(task, return_exceptions=True)
        deadline = cancelled + 5
        while "at" not in observed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return observed.get("at", math.inf) - cancelled

    late = asyncio.run(main())
    bridge.pool.shutdown()
    return late


def test_cancellation_reaches_a_coroutine_the_request_started_with_async_to_sync() -> None:
    late = cancelled_coroutine_test(start_after_cancel=False)
    assert late < 1.0, f"the coroutine ran on for {late:.2f} s"


def test_a_coroutine_started_after_its_request_was_cancelled_is_cancelled_at_once() -> None:
    late = cancelled_coroutine_test(start_after_cancel=True)
    assert late < 1.0, f"the coroutine ran on for {late:.2f} s"


def test_sync_to_async_inside_async_to_sync_comes_back_to_the_requests_thread() -> None:
    seen: dict[str, int] = {}

    async def lookup() -> int:
        return await sync_to_async(threading.get_ident)()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen["app"] = threading.get_ident()
        seen["inner"] = async_to_sync(lookup)()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridge = Bridge(validator(app), max_threads=2)
    asyncio.run(Client().run(bridge, http_scope()))
    assert seen["inner"] == seen["app"]
    bridge.pool.shutdown()


def test_an_async_views_nested_calls_stay_on_its_borrowed_thread() -> None:
    bridge = Bridge(validator(ok_app), max_threads=2)

    async def inner() -> int:
        return await sync_to_async(threading.get_ident)()

    def outer() -> list[int]:
        return [threading.get_ident(), async_to_sync(inner)()]

    @bridge.route("/nested")
    async def view(request: Request) -> list[int]:
        return [*await sync_to_async(outer)(), await sync_to_async(threading.get_ident)()]

    async def main() -> list[Client]:
        clients = [Client() for _ in range(6)]
        await asyncio.gather(*(c.run(bridge, http_scope("/nested")) for c in clients))
        return clients

    clients = asyncio.run(main())
    assert [c.status for c in clients] == [200] * 6
    replies = [json.loads(c.body) for c in clients]
    assert all(len(set(idents)) == 1 for idents in replies), replies
    assert {r[0] for r in replies} <= {t.ident for t in bridge.pool.threads}
    bridge.pool.shutdown()


def test_a_thread_sensitive_call_after_its_request_ended_gets_no_thread_of_its_own() -> None:
    bridge = Bridge(validator(ok_app), max_threads=2)
    tasks: list[asyncio.Task[None]] = []
    outcomes: list[object] = []

    @bridge.route("/leaves-a-task")
    async def view(request: Request) -> str:
        async def later() -> None:
            await asyncio.sleep(0.05)  # the view has returned by now
            try:
                outcomes.append(await sync_to_async(threading.get_ident)())
            except RuntimeError as exc:
                outcomes.append(exc)

        tasks.append(asyncio.ensure_future(later()))
        return "ok"

    async def main() -> set[threading.Thread]:
        before = set(threading.enumerate())
        client = Client()
        await client.run(bridge, http_scope("/leaves-a-task"))
        assert client.status == 200
        await asyncio.gather(*tasks)
        return set(threading.enumerate()) - before - set(bridge.pool.threads)

    extra = asyncio.run(main())
    assert len(outcomes) == 1 and isinstance(outcomes[0], RuntimeError), outcomes
    assert not extra, f"threads outside the pool: {extra}"
    bridge.pool.shutdown()


@pytest.mark.skipif(
    "executor" not in inspect.signature(ThreadSensitiveContext).parameters,
    reason="before 3.13, asgiref sends a thread-sensitive call to an inherited "
    "CurrentThreadExecutor ahead of any ThreadSensitiveContext, so the calling thread runs it",
)
def test_an_async_view_under_async_to_sync_still_runs_its_calls_on_its_lane() -> None:
    # A bridge called from async_to_sync inherits that thread's CurrentThreadExecutor;
    # the view's calls go to its own lane all the same, not back to the calling thread.
    bridge = Bridge(validator(ok_app), max_threads=2)

    @bridge.route("/where")
    async def view(request: Request) -> list[int]:
        return [await sync_to_async(threading.get_ident)() for _ in range(2)]

    async def request() -> Client:
        client = Client()
        await client.run(bridge, http_scope("/where"))
        return client

    client = async_to_sync(request)()
    assert client.status == 200
    idents = json.loads(client.body)
    assert len(set(idents)) == 1, idents
    assert idents[0] != threading.get_ident()
    assert idents[0] in {t.ident for t in bridge.pool.threads}
    bridge.pool.shutdown()


def test_an_async_views_stream_keeps_no_thread_context_in_its_task() -> None:
    # An open stream lives in the request's task: once the view has returned, nothing
    # of asgiref's (the context, an executor) may stay set in that task's context.
    bridge = Bridge(validator(ok_app), max_threads=2)
    seen: dict[str, list[str]] = {}

    @bridge.route("/stream")
    async def view(request: Request) -> Response:
        seen["view"] = [v.name for v in contextvars.copy_context()]
        await sync_to_async(threading.get_ident)()

        async def body() -> AsyncIterator[bytes]:
            seen["stream"] = [v.name for v in contextvars.copy_context()]
            yield b"data: hello\n\n"

        return Response(body(), mimetype="text/event-stream")

    client = Client()
    # A fresh context: an earlier async_to_sync in this thread leaves asgiref's values.
    contextvars.Context().run(asyncio.run, client.run(bridge, http_scope("/stream")))
    assert client.status == 200 and client.body == b"data: hello\n\n"
    assert "thread_sensitive_context" in seen["view"]
    assert not {"thread_sensitive_context", "asgiref.local"} & set(seen["stream"]), seen
    bridge.pool.shutdown()


# -- the way back: one wake-up per batch of completed calls ------------------------------


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads ask of it."""

    wakeups = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def on_counting_loop(main: Callable[[CountingLoop], Any]) -> Any:
    loop = CountingLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def test_calls_that_complete_together_wake_the_loop_once() -> None:
    pool = ThreadPool(8, 0)
    inside = threading.Barrier(9, timeout=10)
    release = threading.Event()

    def work(i: int) -> int:
        inside.wait()
        release.wait(10)
        return i * i

    async def main(loop: CountingLoop) -> tuple[list[int], int]:
        calls = [asyncio.ensure_future(pool.run(work, i)) for i in range(8)]
        await asyncio.sleep(0)  # every call is on the queue
        inside.wait()  # all eight are running
        before = loop.wakeups
        release.set()
        # Hold the loop (as a busy server does) until every worker has handed its
        # result back and gone idle: the first result asks for a wake-up, the rest ride it.
        deadline = time.monotonic() + 10
        while pool.running and time.monotonic() < deadline:
            time.sleep(0.001)
        results = await asyncio.gather(*calls)
        return results, loop.wakeups - before

    results, wakeups = on_counting_loop(main)
    assert results == [i * i for i in range(8)]
    assert wakeups == 1
    pool.shutdown()


def test_results_arriving_while_the_loop_delivers_are_never_left_behind() -> None:
    # 4,000 calls on 8 threads, finishing at every moment relative to the loop's
    # deliveries: each call's own value comes back, and fewer wake-ups than calls.
    pool = ThreadPool(8, 4000)

    def work(i: int) -> int:
        if i % 7 == 0:
            time.sleep(0.0001)
        return i

    async def main(loop: CountingLoop) -> tuple[list[int], int]:
        before = loop.wakeups
        results = await asyncio.gather(*(pool.run(work, i) for i in range(4000)))
        return results, loop.wakeups - before

    results, wakeups = on_counting_loop(main)
    assert results == list(range(4000))
    assert 1 <= wakeups < 4000
    pool.shutdown()


def test_a_cancelled_call_in_a_batch_does_not_disturb_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ThreadPool(4, 0)
    inside = threading.Barrier(5, timeout=10)
    release = threading.Event()

    def work(i: int) -> int:
        inside.wait()
        release.wait(10)
        if i == 3:
            raise ValueError("the fourth call fails")
        return i

    async def main(loop: CountingLoop) -> list[object]:
        calls = [asyncio.ensure_future(pool.run(work, i)) for i in range(4)]
        await asyncio.sleep(0)
        inside.wait()
        calls[1].cancel()  # its request went away while its thread runs
        await asyncio.sleep(0)
        release.set()
        while pool.running:
            time.sleep(0.001)
        return await asyncio.gather(*calls, return_exceptions=True)

    with caplog.at_level(logging.ERROR):
        results = on_counting_loop(main)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[3], ValueError)
    assert not caplog.records  # no "Exception in callback" from the delivery
    pool.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("gated", [False, True], ids=["fixed", "gated"])
def test_a_forked_child_starts_its_own_workers(gated: bool) -> None:
    # gunicorn --preload forks workers from a process whose pool may have run calls. The
    # parent's worker keeps its turn at the gate; the child's gate must not count it
    # (with no starvation relief, a turn counted twice would never come free).
    pool = ThreadPool(2, 0)
    if gated:
        pool.gate = Gate(HillClimb(2, start=1), starvation=60)
    assert asyncio.run(pool.run(threading.current_thread)) in pool.threads
    parents = pool.threads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through its exit status)
        try:
            ran = asyncio.run(asyncio.wait_for(pool.run(threading.current_thread), 5))
            fresh = pool.threads == [ran] and ran not in parents
            os._exit(0 if fresh else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pool.shutdown()


def test_a_thousand_concurrent_requests_each_get_their_own_response() -> None:
    # Results come back in batches: none may reach another request's future, and every
    # body goes out chunk by chunk, in order, ended once.
    def app(environ: Environ, start_response: Any) -> Any:
        path = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        if int(path[1:]) % 3 == 0:
            return iter([path, b"|", path])
        return [path]

    bridge = Bridge(validator(app), max_threads=8)

    async def main() -> list[Client]:
        clients = [Client() for _ in range(1000)]
        await asyncio.gather(
            *(c.run(bridge, http_scope(f"/{i}"), timeout=30) for i, c in enumerate(clients))
        )
        return clients

    for i, client in enumerate(asyncio.run(main())):
        path = f"/{i}".encode()
        assert client.status == 200 and client.finished
        assert client.body == (path + b"|" + path if i % 3 == 0 else path)
        # The validator's iterator hides a list: both stream (start, chunks, end).
        assert len(client.sent) == (5 if i % 3 == 0 else 3)
    bridge.pool.shutdown()
