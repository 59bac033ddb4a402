"""Memory per idle connection, in process: ``python -m bench.idle_memory``.

The idle group (``bench.idle``) reads a uvicorn worker's RSS, which moves by whole
pages and carries the server's own cost per connection. This drives the feeds of
``bench.feeds`` at the ASGI message level instead, on uvloop: each connection gets
its request (or websocket connect), sends its first message and waits, as a client
that stays; ``tracemalloc`` then counts the bytes the open connections hold, after a
warm-up and a full collection. The plain-ASGI feed holds only the harness's own
objects (the scope, the task, the pending ``receive``), so bridge's figure less the
plain one is what bridge adds to a connection on any server. ``--top N`` lists the
N largest allocation sites of bridge's feed, the places to look at next.

    .venv/bin/python -m bench.idle_memory                 # SSE and websocket, 2,000 each
    .venv/bin/python -m bench.idle_memory --kind sse --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from . import apps, feeds

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
KIB = 1024

HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"idle"), (b"accept", b"*/*")]
UPGRADE = [
    (b"upgrade", b"websocket"),
    (b"connection", b"upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def scope(kind: str, index: int) -> dict[str, Any]:
    """The scope uvicorn gives a feed's request: ``kind`` is "sse" or "ws"."""
    http = kind == "sse"
    return {
        "type": "http" if http else "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http" if http else "ws",
        "path": f"/{kind}",
        "raw_path": f"/{kind}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS if http else HEADERS + UPGRADE,
        "client": ("127.0.0.2", 40000 + index % 20000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        **({"method": "GET"} if http else {"subprotocols": []}),
    }


class Connection:
    """One client that sends its request, then stays until ``leave()``."""

    __slots__ = ("first", "gone", "messages")

    def __init__(self, kind: str) -> None:
        http = {"type": "http.request", "body": b"", "more_body": False}
        self.first: dict[str, Any] | None = http if kind == "sse" else {"type": "websocket.connect"}
        self.gone: asyncio.Future[dict[str, Any]] | None = None
        self.messages = 0

    async def receive(self) -> dict[str, Any]:
        first, self.first = self.first, None
        if first is not None:
            return first
        self.gone = asyncio.get_running_loop().create_future()
        return await self.gone

    async def send(self, message: dict[str, Any]) -> None:
        self.messages += 1

    def leave(self, kind: str) -> None:
        assert self.gone is not None
        message = "http.disconnect" if kind == "sse" else "websocket.disconnect"
        self.gone.set_result({"type": message, "code": 1000})


async def _open(app: ASGI, kind: str, count: int) -> tuple[list[Connection], list[Any]]:
    loop = asyncio.get_running_loop()
    clients = [Connection(kind) for _ in range(count)]
    tasks = [
        loop.create_task(app(scope(kind, i), client.receive, client.send))
        for i, client in enumerate(clients)
    ]
    for _ in range(50):  # every feed sends its first message and settles into its wait
        await asyncio.sleep(0)
    if not all(c.gone is not None and c.messages >= 2 for c in clients):
        raise RuntimeError(f"Not every {kind} feed sent its first message and waited.")
    return clients, tasks


async def _close(clients: list[Connection], tasks: list[Any], kind: str) -> None:
    for client in clients:
        client.leave(kind)
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if result is not None:
            raise RuntimeError(f"A {kind} feed ended with {result!r} when its client left.")


async def measure(app: ASGI, kind: str, count: int, top: int = 0) -> tuple[float, list[str]]:
    """KiB held per open connection of ``app``'s ``kind`` feed, and its ``top`` sites."""
    # Warm-up with as many connections: imports, caches, free lists, and the tables
    # every connection has a slot in (asyncio's set of all tasks) grown to size, so no
    # contender pays for a resize that an earlier one in the same process already paid.
    await _close(*await _open(app, kind, count), kind)
    gc.collect()
    tracemalloc.start(25 if top else 1)
    try:
        before = tracemalloc.take_snapshot()
        clients, tasks = await _open(app, kind, count)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grouped = after.compare_to(before, "traceback" if top else "filename")
    held = sum(stat.size_diff for stat in grouped) / count / KIB
    sites = []
    for stat in grouped[:top]:
        frames = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in stat.traceback]
        sites.append(f"{stat.size_diff / count:7.0f} B  " + " <- ".join(frames[-1:-7:-1]))
    await _close(clients, tasks, kind)
    return held, sites


def contenders(kind: str) -> list[tuple[str, ASGI]]:
    """bridge, and the plain feed last; for SSE, references in between."""
    bridge: list[tuple[str, ASGI]] = [
        ("bridge", feeds.bridge_feed(apps.micro, 4)),
        ("bridge, metrics=False", feeds.bridge_feed(apps.micro, 4, metrics=False)),
    ]
    if kind == "sse":
        bridge += [
            ("Starlette StreamingResponse", feeds.starlette_feed()),
            ("the same generator by hand, one listener", feeds.generator_feed()),
        ]
    return [*bridge, ("plain ASGI", feeds.asgi_feed(apps.asgi_micro))]


async def run(kinds: list[str], count: int, top: int) -> list[str]:
    lines = [
        "| feed | contender | KiB per connection | over plain ASGI, KiB |",
        "|---|---|--:|--:|",
    ]
    details: list[str] = []
    for kind in kinds:
        held: dict[str, float] = {}
        for name, app in contenders(kind):
            held[name], sites = await measure(app, kind, count, top if name == "bridge" else 0)
            if sites:
                details += ["", f"{kind}, bridge: the {top} largest allocation sites", *sites]
        for name, value in held.items():
            over = value - held["plain ASGI"]
            lines.append(f"| {kind} | {name} | {value:.2f} | {over:.2f} |")
    return lines + details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_memory", description=__doc__)
    parser.add_argument("--kind", choices=["sse", "ws"], action="append", help="default: both")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=0, help="list bridge's N largest sites")
    args = parser.parse_args(argv)
    import uvloop  # as uvicorn runs the feeds

    lines = uvloop.run(run(args.kind or ["sse", "ws"], args.connections, args.top))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
