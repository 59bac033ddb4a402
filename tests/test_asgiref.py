"""What bridge needs from asgiref, at both ends of the range pyproject allows.

scripts/test runs these with the newest asgiref in the range, and
scripts/test-asgiref-floor with the oldest.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import asgiref
from asgiref.sync import async_to_sync, sync_to_async

from bridge import Bridge, Request

from .asgi import Client, http_scope

Environ = dict[str, Any]


def ok_app(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_the_installed_asgiref_is_inside_the_range_pyproject_allows() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    found = re.search(r'"asgiref>=([0-9.]+),<([0-9.]+)"', pyproject)
    assert found is not None, "pyproject.toml must pin asgiref as >=FLOOR,<CEILING"
    floor, ceiling = version(found[1]), version(found[2])
    assert floor <= version(asgiref.__version__) < ceiling


def test_an_async_view_in_the_legacy_middleware_runs_on_each_servers_loop() -> None:
    # async_to_sync(view) is made once, when the route is added; asgiref before 3.12
    # kept the first loop it saw and ran the view on a private loop of its own once
    # that loop had closed, with every later event loop (a restarted server, tests).
    bridge = Bridge(validator(ok_app))
    seen: list[asyncio.AbstractEventLoop] = []

    @bridge.route("/inside", middleware=lambda app: app)
    async def view(request: Request) -> str:
        seen.append(asyncio.get_running_loop())
        return "inside"

    async def main() -> tuple[asyncio.AbstractEventLoop, bytes]:
        client = Client()
        await client.run(bridge, http_scope("/inside"))
        return asyncio.get_running_loop(), client.body

    loops = []
    for _ in range(3):
        loop, body = asyncio.run(main())
        assert body == b"inside"
        loops.append(loop)
    assert seen == loops
    bridge.pool.shutdown()


def test_a_legacy_async_to_sync_made_at_import_runs_on_each_servers_loop() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def lookup() -> None:
        seen.append(asyncio.get_running_loop())

    lookup_sync = async_to_sync(lookup)  # as a module of the legacy app would

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        lookup_sync()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridge = Bridge(validator(app))

    async def main() -> asyncio.AbstractEventLoop:
        await Client().run(bridge, http_scope())
        return asyncio.get_running_loop()

    loops = [asyncio.run(main()) for _ in range(3)]
    assert seen == loops
    bridge.pool.shutdown()


def test_a_cancelled_async_view_does_not_hold_up_the_event_loop() -> None:
    # asgiref's own ThreadSensitiveContext joined the request's thread on the loop as
    # it exited (before 3.12): a view cancelled during a 1 s sync call froze every
    # other request. The request's lane never waits on the loop, whatever the version.
    inside = threading.Event()
    bridge = Bridge(validator(ok_app), max_threads=2)

    def slow() -> None:
        inside.set()
        time.sleep(1.0)

    @bridge.route("/slow")
    async def view(request: Request) -> str:
        await sync_to_async(slow)()
        return "slow"

    async def main() -> float:
        gaps = [0.0]

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        task = asyncio.ensure_future(Client().run(bridge, http_scope("/slow")))
        while not inside.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(1.2)  # past the end of the sync call
        tick.cancel()
        return max(gaps)

    worst = asyncio.run(main())
    assert worst < 0.5, f"the event loop stalled for {worst:.2f} s"
    bridge.pool.shutdown()
