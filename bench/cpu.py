"""CPU time per request, in process: ``python -m bench.cpu``.

wrk on a shared two-core machine cannot see a 5 % difference: the load generator,
the server and every other process share the cores, and a run's rate moves by more
than that from one minute to the next. This drives the ASGI application directly
instead: 32 concurrent message-level clients on uvloop (as uvicorn runs it), each
sending hello-world requests with a ``receive`` and a ``send`` that do nothing, and
reads the CPU the process spent (``process_time``, every thread) and the event loop
spent (``thread_time`` on the loop) per request. The contenders run interleaved, a
round each in turn (each round starting with the next one), and the median of the
rounds is reported, so a busy moment falls on all of them alike. The harness alone
(a pure-ASGI app) is the floor; "minimal thread hop" is the least a thread-hop
adapter does (``run_in_executor`` and two sends). "every layer unused" is the
default with 20 async routes and a shadow route the requests never match, the
dashboard and metrics pages, and a broadcast hub: what those layers cost a plain
legacy request.

    .venv/bin/python -m bench.cpu                  # bridge, its variants, the floor
    .venv/bin/python -m bench.cpu --rounds 20 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import apps

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/hello",
    "raw_path": b"/hello",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}

REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def minimal_hop(wsgi: Any, threads: int) -> ASGI:
    """The least a thread-hop adapter does: a minimal environ, ``run_in_executor`` and
    two sends. Not a correct adapter (no body, no streaming, no limits): a yardstick."""
    executor = ThreadPoolExecutor(threads)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        environ = {
            "REQUEST_METHOD": scope["method"],
            "PATH_INFO": scope["path"],
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "wsgi.url_scheme": "http",
        }

        def call() -> tuple[list[Any], bytes]:
            started: list[Any] = []

            def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
                started[:] = [int(status[:3]), [(k.encode(), v.encode()) for k, v in headers]]

            body = b"".join(wsgi(environ, start_response))
            return started, body

        started, body = await asyncio.get_running_loop().run_in_executor(executor, call)
        await send({"type": "http.response.start", "status": started[0], "headers": started[1]})
        await send({"type": "http.response.body", "body": body})

    return app


def contenders() -> dict[str, ASGI]:
    """What each layer costs a legacy request that does not use it, beside the default."""
    from bridge import Bridge

    threads = apps.threads()
    every = Bridge(
        apps.micro,
        max_threads=threads,
        dashboard_path="/_bridge/",
        metrics_path="/_bridge/metrics",
        broadcast="memory://",
    )

    async def view(request: Any, item_id: int) -> Any:
        from werkzeug.wrappers import Response

        return Response(f"item {item_id}")

    for number in range(20):
        every.route(f"/async/{number}/<int:item_id>", methods=["GET"])(view)
    every.route("/shadowed/<int:item_id>", shadow=True, methods=["GET"])(view)
    return {
        "bridge": Bridge(apps.micro, max_threads=threads),
        "bridge, metrics=False": Bridge(apps.micro, max_threads=threads, metrics=False),
        "bridge, every layer unused": every,
        "minimal thread hop": minimal_hop(apps.micro, threads),
        "pure ASGI (the harness alone)": apps.asgi_micro,
    }


async def _clients(app: ASGI, requests: int, concurrency: int) -> int:
    """Send ``requests`` hello-world requests, ``concurrency`` at a time; count the bodies."""
    bodies = 0

    async def receive() -> dict[str, Any]:
        return REQUEST

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body" and not message.get("more_body"):
            bodies += 1

    async def client(count: int) -> None:
        for _ in range(count):
            await app(dict(SCOPE), receive, send)

    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    return bodies


async def _round(app: ASGI, requests: int, concurrency: int) -> tuple[float, float, float]:
    """(CPU, loop CPU, wall) in microseconds per request for one round."""
    cpu, loop, wall = time.process_time(), time.thread_time(), time.perf_counter()
    served = await _clients(app, requests, concurrency)
    done = (time.process_time(), time.thread_time(), time.perf_counter())
    expected = requests // concurrency * concurrency
    if served != expected:
        raise RuntimeError(f"{served} of {expected} responses completed.")
    scale = 1e6 / served
    return (done[0] - cpu) * scale, (done[1] - loop) * scale, (done[2] - wall) * scale


async def measure(
    apps_by_name: dict[str, ASGI], rounds: int, requests: int, concurrency: int
) -> dict[str, list[tuple[float, float, float]]]:
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in apps_by_name}
    for app in apps_by_name.values():  # warm-up: threads started, caches filled
        await _clients(app, min(requests, 2000), concurrency)
    names = list(apps_by_name)
    for number in range(rounds):
        # Each round starts with the next contender, so none always follows the same one.
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(await _round(apps_by_name[name], requests, concurrency))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds per contender (median)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once")
    args = parser.parse_args(argv)
    import uvloop

    found = contenders()
    results = uvloop.run(measure(found, args.rounds, args.requests, args.concurrency))
    print(
        f"{args.rounds} rounds of {args.requests:,} requests, {args.concurrency} at a time, "
        "medians in us per request"
    )
    print(f"| {'contender':30} | {'CPU':>6} | {'loop CPU':>8} | {'wall':>6} |")
    print(f"|{'-' * 32}|{'-' * 7}:|{'-' * 9}:|{'-' * 7}:|")
    for name, runs in results.items():
        cpu, loop, wall = (statistics.median(run[i] for run in runs) for i in range(3))
        print(f"| {name:30} | {cpu:6.1f} | {loop:8.1f} | {wall:6.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
