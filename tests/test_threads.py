"""The thread pool: bounded concurrency, parallelism, admission, context and the server's loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any
from wsgiref.validate import validator

from asgiref.sync import async_to_sync

from bridge import Bridge

from .asgi import Client, http_scope

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
