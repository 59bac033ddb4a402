"""Live-event fan-out: ``bridge.Broadcast`` on Redis against Channels with channels_redis.

The same job for each contender: websocket subscribers spread over 2 server processes
(``--workers 2``), one publisher, one Redis. A message carries its publish time
(``time.monotonic()``, one clock for every process on the machine), so each client
measures delivery latency itself. Two phases:

* paced: ``Size.paced_rate`` events a second; latency p50 and p99 over every delivery;
* burst: ``BURST`` events published back to back; deliveries per second, from the
  first publish to the last delivery, and how many of them arrived at all.

``python -m bench.fanout`` runs it alone; ``scripts/bench`` runs it as the group
``fanout`` (``--only fanout``). Clients, servers and Redis share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "bench"
SENTINEL = -1
BURST_BASE = 1_000_000  # burst events are numbered from here
QUIET_SECONDS = 5.0  # a client that hears nothing this long after the burst stops


@dataclass(frozen=True)
class Size:
    subscribers: int
    client_processes: int
    paced_events: int
    burst_events: int
    # Events a second in the paced phase: low enough that every contender keeps up on
    # 2 cores (1,000 subscribers x 2/s = 2,000 deliveries a second), so the latency
    # measures delivery, not a queue that grows.
    paced_rate: float = 2.0

    @classmethod
    def make(cls, quick: bool) -> Size:
        if quick:
            return cls(subscribers=50, client_processes=1, paced_events=10, burst_events=20,
                       paced_rate=10.0)  # fmt: skip
        return cls(subscribers=1000, client_processes=2, paced_events=30, burst_events=200)


@dataclass
class Outcome:
    contender: str
    description: str
    size: Size
    latencies_ms: list[float] = field(default_factory=list)
    expected_paced: int = 0
    expected_burst: int = 0
    got_burst: int = 0
    burst_seconds: float = 0.0
    error: str = ""

    @property
    def p50(self) -> float | None:
        return _quantile(self.latencies_ms, 0.5)

    @property
    def p99(self) -> float | None:
        return _quantile(self.latencies_ms, 0.99)

    @property
    def delivered_per_second(self) -> float:
        return self.got_burst / self.burst_seconds if self.burst_seconds else 0.0


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the servers' apps (imported in each worker process) ----------------------------------


def bridge_app() -> Any:
    """A Bridge whose websocket route forwards every event of ``CHANNEL``."""
    from bridge import Bridge, WebSocket

    def no_legacy(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no legacy app here\n"]

    app = Bridge(no_legacy)

    @app.websocket("/ws")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        async with app.broadcast.subscribe(CHANNEL) as events:
            await ws.send_text("ready")

            async def forward() -> None:
                async for event in events:
                    await ws.send_text(event.data)

            task = asyncio.ensure_future(forward())
            try:
                async for _ in ws:
                    pass
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    return app


def channels_app() -> Any:
    """A Channels consumer in group ``CHANNEL``, the way Channels' tutorial writes one."""
    import django
    from django.conf import settings

    if not settings.configured:
        backend = os.environ.get("BENCH_CHANNELS_LAYER", "channels_redis.core.RedisChannelLayer")
        settings.configure(
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={
                "default": {"BACKEND": backend, "CONFIG": {"hosts": [os.environ["BENCH_REDIS"]]}}
            },
        )
        django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    class Feed(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add(CHANNEL, self.channel_name)
            await self.accept()
            await self.send(text_data="ready")

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(CHANNEL, self.channel_name)

        async def bench_event(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    return ProtocolTypeRouter({"websocket": URLRouter([path("ws", Feed.as_asgi())])})


# -- publishers (in this process) ---------------------------------------------------------


Publisher = tuple[Callable[[str], Any], Callable[[], Any]]  # publish(text), close()


async def _publish_bridge(url: str) -> Publisher:
    from bridge import Broadcast

    broadcast = Broadcast(url)
    await broadcast.start()

    async def publish(text: str) -> None:
        await broadcast.publish(CHANNEL, text)

    return publish, broadcast.stop


async def _publish_channels(url: str, layer: str) -> Publisher:
    if layer.endswith("RedisPubSubChannelLayer"):
        from channels_redis.pubsub import RedisPubSubChannelLayer

        pubsub = RedisPubSubChannelLayer(hosts=[url])

        async def publish_pubsub(text: str) -> None:
            await pubsub.group_send(CHANNEL, {"type": "bench.event", "text": text})

        return publish_pubsub, pubsub.flush
    from channels_redis.core import RedisChannelLayer

    core = RedisChannelLayer(hosts=[url])

    async def publish_core(text: str) -> None:
        await core.group_send(CHANNEL, {"type": "bench.event", "text": text})

    return publish_core, core.close_pools


async def _drive(publish: Callable[[str], Any], size: Size) -> tuple[float, float]:
    """Publish the paced phase, then the burst; returns the burst's start and end."""
    interval = 1 / size.paced_rate
    next_at = time.monotonic()
    for n in range(size.paced_events):
        await publish(f"{n} {time.monotonic():.6f}")
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.sleep(1.0)  # let the paced phase drain
    start = time.monotonic()
    for n in range(size.burst_events):
        await publish(f"{BURST_BASE + n} {time.monotonic():.6f}")
    end = time.monotonic()
    await publish(f"{SENTINEL} {time.monotonic():.6f}")
    return start, end


# -- clients (python -m bench.fanout client URL COUNT) ---------------------------------


async def _client(url: str, count: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    burst = 0
    last_burst = 0.0
    gate = asyncio.Semaphore(50)

    async def open_one() -> Any:
        async with gate:
            ws = await connect(url, open_timeout=60, max_queue=None, ping_interval=None)
            assert await ws.recv() == "ready"
            return ws

    sockets = await asyncio.gather(*(open_one() for _ in range(count)))
    print("READY", flush=True)

    async def listen(ws: Any) -> None:
        nonlocal burst, last_burst
        while True:
            try:
                text = await asyncio.wait_for(ws.recv(), QUIET_SECONDS if burst else 120)
            except (asyncio.TimeoutError, Exception):
                break
            now = time.monotonic()
            number, _, sent = text.partition(" ")
            n = int(number)
            if n == SENTINEL:
                break
            if n >= BURST_BASE:
                burst += 1
                last_burst = max(last_burst, now)
            else:
                latencies.append(round((now - float(sent)) * 1000, 3))

    await asyncio.gather(*(listen(ws) for ws in sockets))
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()
    return {"latencies_ms": latencies, "burst": burst, "last_burst": last_burst}


# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as output:
        process = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {timeout} s.")


def _accepts(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


@contextlib.contextmanager
def _redis(out: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("The fan-out benchmark needs redis-server: apt-get install redis-server")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with _process(args, {}, out / "redis.log"):
        _wait_for(lambda: _accepts(port), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"


CONTENDERS = {
    "bridge Broadcast": (
        "`bridge serve --workers 2 --broadcast redis://`, `app.broadcast.subscribe()`",
        "bridge",
    ),
    "Channels RedisChannelLayer": (
        "Channels 4 consumer, `group_send`, channels_redis `RedisChannelLayer`, uvicorn -w 2",
        "channels_redis.core.RedisChannelLayer",
    ),
    "Channels RedisPubSubChannelLayer": (
        "the same consumer on channels_redis `RedisPubSubChannelLayer`",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
    ),
}


def _server_args(kind: str, port: int, url: str) -> tuple[list[str], dict[str, str]]:
    if kind == "bridge":
        args = [sys.executable, "-m", "bridge", "serve", "bench.fanout:bridge_app()",
                "--port", str(port), "--workers", "2", "--broadcast", url,
                "--no-access-log", "--log-level", "warning"]  # fmt: skip
        return args, {}
    args = [sys.executable, "-m", "uvicorn", "--factory", "bench.fanout:channels_app",
            "--port", str(port), "--workers", "2", "--no-access-log",
            "--log-level", "warning"]  # fmt: skip
    return args, {"BENCH_REDIS": url, "BENCH_CHANNELS_LAYER": kind}


def run_one(name: str, size: Size, url: str, out: Path, progress: Callable[[str], None]) -> Outcome:
    description, kind = CONTENDERS[name]
    outcome = Outcome(name, description, size)
    port = _free_port()
    args, env = _server_args(kind, port, url)
    slug = name.lower().replace(" ", "-")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process(args, env, out / f"fanout-{slug}-server.log"))
        _wait_for(lambda: _accepts(port), 60, name)
        time.sleep(1.0)  # both workers up (the second may start after the socket opens)
        per_client = [size.subscribers // size.client_processes] * size.client_processes
        per_client[0] += size.subscribers - sum(per_client)
        clients = []
        for index, count in enumerate(per_client):
            command = [sys.executable, "-m", "bench.fanout", "client",
                       f"ws://127.0.0.1:{port}/ws", str(count)]  # fmt: skip
            log = out / f"fanout-{slug}-client{index}.json"
            output = stack.enter_context(open(log, "w+b"))
            client = subprocess.Popen(command, cwd=ROOT, stdout=output,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
            stack.callback(_kill, client)
            clients.append((client, log))
        _wait_for(
            lambda: all(b"READY" in log.read_bytes() for _, log in clients), 120, "the clients"
        )
        publisher = _publish_bridge(url) if kind == "bridge" else _publish_channels(url, kind)

        async def drive() -> tuple[float, float]:
            publish, close = await publisher
            try:
                return await _drive(publish, size)
            finally:
                await close()

        start, _ = asyncio.run(drive())
        last = 0.0
        for process, log in clients:
            try:
                process.wait(300)
            except subprocess.TimeoutExpired:
                process.kill()
                outcome.error = "a client did not finish"
            lines = log.read_text().splitlines()
            if not lines or not lines[-1].startswith("{"):
                outcome.error = f"a client failed; see {log}"
                continue
            report = json.loads(lines[-1])
            outcome.latencies_ms.extend(report["latencies_ms"])
            outcome.got_burst += report["burst"]
            last = max(last, report["last_burst"])
        outcome.expected_paced = size.subscribers * size.paced_events
        outcome.expected_burst = size.subscribers * size.burst_events
        outcome.burst_seconds = max(last - start, 0.0)
    progress(line(outcome))
    return outcome


def line(o: Outcome) -> str:
    if o.error:
        return f"fanout     {o.contender:34} {o.error}"
    return (
        f"fanout     {o.contender:34} p50 {o.p50:.1f} ms  p99 {o.p99:.1f} ms  "
        f"{o.delivered_per_second:,.0f} deliveries/s  "
        f"paced {len(o.latencies_ms)}/{o.expected_paced}  burst {o.got_burst}/{o.expected_burst}"
    )


def table(outcomes: list[Outcome]) -> str:
    size = outcomes[0].size
    rows = [
        f"{size.subscribers:,} websocket subscribers over {size.client_processes} client "
        f"processes, servers with 2 worker processes, one publisher, one Redis; paced phase "
        f"{size.paced_events} events at {size.paced_rate:g}/s, burst {size.burst_events} events "
        "back to back.",
        "",
        "| contender | latency p50 (paced) | latency p99 (paced) | deliveries/s (burst) "
        "| delivered (paced) | delivered (burst) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        if o.error:
            rows.append(f"| {o.contender} | {o.error} | | | | |")
            continue
        rows.append(
            f"| {o.contender} | {o.p50:.1f} ms | {o.p99:.1f} ms | {o.delivered_per_second:,.0f} "
            f"| {len(o.latencies_ms):,} / {o.expected_paced:,} "
            f"| {o.got_burst:,} / {o.expected_burst:,} |"
        )
    rows.append("")
    rows.extend(f"- {o.contender}: {o.description}" for o in outcomes)
    return "\n".join(rows) + "\n"


def chart(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [o for o in outcomes if not o.error]
    names = [o.contender.replace(" ", "\n", 1) for o in good]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(names, [o.p99 or 0 for o in good], color="#4c72b0")
    left.set_title("delivery latency p99, ms (lower is better)")
    right.bar(names, [o.delivered_per_second for o in good], color="#55a868")
    right.set_title("deliveries per second in a burst (higher is better)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(out: Path, quick: bool, progress: Callable[[str], None]) -> str:
    """Run every contender; write fanout.md, fanout.json and fanout.png to ``out``."""
    return table(_outcomes(out, quick, progress))


def _outcomes(out: Path, quick: bool, progress: Callable[[str], None]) -> list[Outcome]:
    _raise_open_files(8192)
    size = Size.make(quick)
    outcomes: list[Outcome] = []
    with _redis(out) as url:
        for name in CONTENDERS:
            try:
                outcomes.append(run_one(name, size, url, out, progress))
            except Exception as exc:  # a contender that breaks must not hide the others
                failed = Outcome(name, CONTENDERS[name][0], size, error=f"failed: {exc}")
                outcomes.append(failed)
                progress(line(failed))
    (out / "fanout.md").write_text(table(outcomes))
    summary = [
        {"contender": o.contender, "p50_ms": o.p50, "p99_ms": o.p99,
         "deliveries_per_second": o.delivered_per_second, "paced": len(o.latencies_ms),
         "expected_paced": o.expected_paced, "burst": o.got_burst,
         "expected_burst": o.expected_burst, "error": o.error,
         "mean_ms": statistics.fmean(o.latencies_ms) if o.latencies_ms else None}
        for o in outcomes
    ]  # fmt: skip
    (out / "fanout.json").write_text(json.dumps(summary, indent=2))
    with contextlib.suppress(Exception):
        chart(outcomes, out / "fanout.png")
    return outcomes


METHOD = """
Websocket subscribers over 2 server processes (`--workers 2`) and one publisher, on one
Redis started for the run; every message carries its publish time (`time.monotonic()`,
one clock for every process on the machine), so each client measures delivery latency
itself. Paced phase: latency p50 and p99 over every delivery. Burst: events published
back to back; deliveries per second from the first publish to the last delivery, and
how many arrived at all. See bench/fanout.py.
"""


def fanout_group(plan: Any, out: Path, progress: Callable[[str], None]) -> Any:
    """``scripts/bench``'s group "fanout": a ``bench.groups.Section`` of the run."""
    from .groups import Cell, Section

    outcomes = _outcomes(out, plan.quick, progress)
    cells = []
    for o in outcomes:
        cell = Cell("fan-out", o.contender, "deliveries/s", o.delivered_per_second, o.p50, o.p99)
        cell.valid = not o.error and o.got_burst == o.expected_burst
        if o.error:
            cell.notes.append(o.error)
        elif o.got_burst != o.expected_burst:
            cell.notes.append(f"{o.expected_burst - o.got_burst:,} burst events lost")
        cells.append(cell)
    title = f"Live events fan-out, {outcomes[0].size.subscribers:,} websocket subscribers"
    return Section("fanout", title, table(outcomes), METHOD, cells)


def _raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "client"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fanout")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so every server and client is stopped on the way out

    signal.signal(signal.SIGTERM, interrupt)
    if args.command == "client":
        url, count = args.rest
        report = asyncio.run(_client(url, int(count)))
        print(json.dumps(report), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    print(run(args.out, args.quick, lambda text: print(text, flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
