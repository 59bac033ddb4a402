"""Ten thousand idle connections on one worker: memory per connection, time to accept, legacy p99.

The server holds ``/sse`` feeds or ``/ws`` websockets (``bench.feeds``) that send one
message and then stay silent. A separate client process (``python -m bench.idle``)
opens them all, checks that each got its message, reports how long that took, and
holds them while wrk loads ``/hello`` at a fixed rate; then it closes them and
reports how many were still open. The server's RSS is read before the first and
after the last connection: the difference over the count is the cost of one.

Client sockets bind to several loopback addresses (127.0.0.2, .3, ...) with
``IP_BIND_ADDRESS_NO_PORT``, so ten thousand connections per run, run after run,
never exhaust the ephemeral ports of one address pair.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from . import clients, runner
from .feeds import EVENT, GREETING
from .groups import Cell, Section, _number, _ratio, _shown, attempt, serving
from .workloads import Plan, Progress

KIB = 1024
SOURCES = 8  # client addresses 127.0.0.2 ... 127.0.0.9
OPENING_AT_ONCE = 256  # handshakes in flight, below every server's listen backlog
OPEN_TIMEOUT = 180.0
# Linux's socket option (<netinet/in.h>); Python names it from 3.12.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

CONTENDERS = [
    # label, wrapper in bench.apps (<wrapper>__feed), what it is, the kinds it serves
    ("bridge", "bridge", "an async route (`/sse`) and a websocket route (`/ws`) on `Bridge`",
     ("sse", "ws")),
    ("plain ASGI", "asgi", "the same feed as a bare ASGI app: the floor", ("sse", "ws")),
    ("generator by hand", "generator",
     "bridge's SSE view written by hand in plain ASGI: the same async generator and one "
     "task that listens for the disconnect, the floor of a view of that shape "
     "(`bench.feeds.generator_feed`)", ("sse",)),
    ("Channels", "channels", "`AsyncHttpConsumer` and `AsyncWebsocketConsumer`, Django pages",
     ("sse", "ws")),
]  # fmt: skip
KINDS = [("SSE", "sse"), ("websocket", "ws")]


def connections(plan: Plan) -> int:
    """10,000, or 200 with ``--quick``; ``--idle-connections N`` sets it (through the env)."""
    chosen = os.environ.get("BENCH_IDLE_CONNECTIONS")
    if chosen:
        return int(chosen)
    return 200 if plan.quick else 10_000


def raise_descriptor_limit(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE (inherited by the servers and the client)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 1024
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed + 64:
        raise RuntimeError(
            f"The descriptor limit is {soft} (hard {hard}); {needed} idle connections need "
            f"about {needed + 64}. Raise it with `ulimit -n {needed + 1024}` and run again."
        )
    return soft


def idle(plan: Plan, out: Path, progress: Progress) -> Section:
    """Every contender, SSE then websocket, holding ``connections(plan)`` idle clients."""
    from .groups import prepare_frameworks

    count = connections(plan)
    raise_descriptor_limit(count)
    env = prepare_frameworks(out)
    cells: list[Cell] = []
    for label, kind in KINDS:
        for contender, wrapper, _, kinds in CONTENDERS:
            if kind not in kinds:
                continue
            cell = Cell(label, contender, "KiB/conn")
            attempt(
                cell,
                progress,
                lambda c=cell, w=wrapper, k=kind: _hold(c, plan, out, f"{w}__feed", k, count, env),
            )
            cells.append(cell)
    contenders = "\n".join(f"- **{name}**: {what}" for name, _, what, _ in CONTENDERS)
    return Section(
        "idle",
        f"{count:,} idle connections on one uvicorn worker",
        idle_table(cells),
        IDLE_METHOD.format(count=count, contenders=contenders, sources=SOURCES),
        cells,
        readme=idle_table(cells, readme=True),
    )


def _hold(
    cell: Cell, plan: Plan, out: Path, target: str, kind: str, count: int, env: dict[str, str]
) -> None:
    log = out / "servers.log"
    logged = log.stat().st_size if log.exists() else 0
    with serving(out, "uvicorn", target, 32, env) as server:
        port = server.port
        processes = server.processes()
        # Warm-up: the code paths of a feed and of a legacy page, then the baseline.
        _client(port, kind, 20, hold=False)
        clients.warm_up(port, "/hello", 50)
        time.sleep(0.3)
        sampler = clients.RssSampler(processes)
        baseline = sampler.sample()
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.idle", str(port), kind, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            opened = _report(client.stdout)
            if opened.get("opened") != count:
                raise clients.CheckFailed(f"the client opened {opened}, not {count} connections")
            time.sleep(0.5)  # let the server finish what the last handshakes started
            held = sampler.sample()
            cell.value = (held - baseline) / count / KIB
            cell.extra["accept_seconds"] = float(opened["seconds"])
            cell.extra["rss_mib"] = held / (KIB * KIB)
            cell.extra["baseline_mib"] = baseline / (KIB * KIB)
            _legacy_p99(cell, plan, out, port)
            client.stdin.write("close\n")
            client.stdin.flush()
            closing = _report(client.stdout)
            if closing.get("alive") != count:
                cell.valid = False
                cell.notes.append(f"{count - int(closing.get('alive', 0))} feeds ended early")
        finally:
            if client.poll() is None:
                client.kill()
            client.wait()
    # No feed blocks: a warning from bridge's blocking detector here would be a false one.
    with log.open("rb") as handle:
        handle.seek(logged)
        warnings = handle.read().count(b"blocked the event loop")
    if warnings:
        cell.notes.append(f"the blocking detector warned {warnings} times")


def _report(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise clients.CheckFailed("the idle client exited without a report")
    report: dict[str, Any] = json.loads(line)
    if "error" in report:
        raise clients.CheckFailed(report["error"])
    return report


def _legacy_p99(cell: Cell, plan: Plan, out: Path, port: int) -> None:
    """p99 of ``/hello`` at about 800 req/s (8 connections, 10 ms apart) with every feed open."""
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    result = runner.run_wrk(
        script,
        f"http://127.0.0.1:{port}/hello",
        connections=8,
        seconds=max(plan.seconds, 2),
        expect_length=-1,
        delay_ms=10,
    )
    cell.p50_ms, cell.p99_ms = result.p50_ms, result.p99_ms
    cell.extra["legacy_rps"] = result.requests_per_second
    if not result.valid:
        cell.valid = False
        cell.notes.append(f"legacy pages: {result.bad_status} non-2xx of {result.good}")


def idle_table(cells: list[Cell], readme: bool = False) -> str:
    lines = [
        "| feed | contender | RSS per connection, KiB | vs plain ASGI | time to accept all, s "
        "| legacy p99 meanwhile, ms |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for label, _ in KINDS:
        floor = next(
            (c.value for c in cells if c.row == label and c.contender == "plain ASGI" and c.valid),
            None,
        )
        for cell in (c for c in cells if c.row == label):
            name = f"**{cell.contender}**" if cell.contender == "bridge" else cell.contender
            accept = cell.extra.get("accept_seconds")
            lines.append(
                f"| {label} | {name} | {_shown(cell, 1)} "
                f"| {_ratio(cell.value if cell.valid else None, floor)} "
                f"| {_number(accept, 1)} | {_number(cell.p99_ms, 1)} |"
            )
    if readme:
        return "\n".join(lines) + "\n"
    notes = [f"{c.row}, {c.contender}: {'; '.join(c.notes)}" for c in cells if c.notes]
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


IDLE_METHOD = """One uvicorn process (`--http httptools`, uvloop) per contender and feed, started
fresh; {count:,} connections each:

{contenders}

A client process opens the connections, {opening} handshakes in flight at a time,
from {sources} loopback source addresses, and checks that each received its first
message (`data: hello` for SSE, the text `hello` for a websocket); *time to accept
all* runs from its first connect to its last check. The RSS of the server is read
after a warm-up of 20 feeds and 50 legacy pages, and again with all connections
open; the difference over the count is the memory of one connection. With every
feed open, wrk requests the legacy `/hello` page (through bridge's WSGI path for
bridge, the plain app, Django's ASGI handler for Channels) on 8 connections with
10 ms between requests (about 800 req/s), and its p99 is the last column. Last, the
client checks that every feed is still open and closes them.
Channels' SSE consumer keeps its handler running until the server stops (an
`AsyncConsumer` handles one message at a time, so it sees `http.disconnect` only
after `handle()` returns), which is its documented shape for an endless stream.
""".replace("{opening}", str(OPENING_AT_ONCE))


# -- the client process ---------------------------------------------------------------------


def _request(kind: str) -> bytes:
    if kind == "sse":
        return b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def _open(
    port: int, kind: str, source: str, gate: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with gate:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(_request(kind))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        expected = b"HTTP/1.1 200" if kind == "sse" else b"HTTP/1.1 101"
        if not head.startswith(expected):
            raise RuntimeError(f"/{kind} answered {head[:60]!r}")
        wanted = EVENT if kind == "sse" else GREETING.encode()
        seen = b""
        while wanted not in seen:
            chunk = await asyncio.wait_for(reader.read(4096), 60)
            if not chunk:
                raise RuntimeError(f"/{kind} closed before its first message")
            seen += chunk
        return reader, writer


async def _watch(reader: asyncio.StreamReader, kind: str, ended: list[int]) -> None:
    """Read what the server sends while the connection idles; count it if the feed ends."""
    while chunk := await reader.read(4096):
        # The last chunk of a chunked body, or a websocket close frame.
        if (kind == "sse" and b"0\r\n\r\n" in chunk) or (kind == "ws" and chunk[0] == 0x88):
            break
    ended.append(1)


async def _client_main(port: int, kind: str, count: int, hold: bool) -> dict[str, Any]:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    sources = [f"127.0.0.{2 + n}" for n in range(SOURCES)]
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(_open(port, kind, sources[n % SOURCES], gate) for n in range(count))
    )
    seconds = time.perf_counter() - started
    ended: list[int] = []
    watchers = [asyncio.ensure_future(_watch(reader, kind, ended)) for reader, _ in opened]
    if hold:
        print(json.dumps({"opened": len(opened), "seconds": seconds}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    alive = len(opened) - len(ended)
    for watcher in watchers:
        watcher.cancel()
    for _, writer in opened:
        writer.close()
    return {"alive": alive}


def _client(port: int, kind: str, count: int, hold: bool = True) -> dict[str, Any]:
    return asyncio.run(_client_main(port, kind, count, hold))


def main(argv: list[str]) -> int:
    port, kind, count = int(argv[0]), argv[1], int(argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    try:
        report = _client(port, kind, count)
    except Exception as exc:  # the parent reads one line either way
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
