"""The shadow workload: what a shadow route costs its clients, against the same route without.

One bridge server on uvicorn, one legacy app that answers hello world at every path,
and four paths measured in turn, in rounds (so drift in the machine's load hits
each alike) at one offered load (a pause between each connection's requests, as in
the ``paced`` workload, so latencies compare at one request rate):

* ``/plain``: no route, the legacy app alone (the reference);
* ``/shadow/raising``: a shadow route whose view raises;
* ``/shadow/sleeping``: a shadow route whose async view sleeps 50 ms;
* ``/shadow/blocking``: a shadow route whose sync view sleeps 50 ms in a worker thread.

The result is the worst client p99 of the three shadow paths as a percentage of the
p99 of ``/plain``: 100 % means the shadow costs the client nothing. Each wrk run
checks every response's status and length, and the server's own shadow counters
are read at the end, to show the shadow views did run (and fail, and get skipped
when the budget was full).
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import apps, clients, runner
from .plan import Plan, Result, Workload

PLAIN = "/plain"
SHADOWED = {
    "/shadow/raising": "a view that raises",
    "/shadow/sleeping": "an async view sleeping 50 ms",
    "/shadow/blocking": "a sync view sleeping 50 ms in a thread",
}
SLEEP_SECONDS = 0.05
METRICS_PATH = "/_bridge/metrics"


def legacy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The legacy app: hello world, whatever the path."""
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(apps.HELLO)))]
    )
    return [apps.HELLO]


def _application() -> Any:
    from werkzeug.wrappers import Response

    from bridge import Bridge

    bridge = Bridge(legacy, max_threads=apps.threads(), metrics_path=METRICS_PATH)

    @bridge.route("/shadow/raising", methods=["GET"], shadow=True)
    async def raising(request: Any) -> Any:
        raise RuntimeError("a broken shadow view")

    @bridge.route("/shadow/sleeping", methods=["GET"], shadow=True)
    async def sleeping(request: Any) -> Any:
        await asyncio.sleep(SLEEP_SECONDS)
        return Response(apps.HELLO, content_type="text/plain")

    @bridge.route("/shadow/blocking", methods=["GET"], shadow=True)
    def blocking(request: Any) -> Any:
        time.sleep(SLEEP_SECONDS)
        return Response(apps.HELLO, content_type="text/plain")

    return bridge


def __getattr__(name: str) -> Any:
    """``bench.shadow:app``, built on first import (by the server process only)."""
    if name != "app":
        raise AttributeError(f"bench.shadow has no attribute {name!r}.")
    app = globals()["app"] = _application()
    return app


def run(plan: Plan, workload: Workload, result: Result, out: Path, script: Path) -> None:
    """Serve ``bench.shadow:app`` on uvicorn, measure every path, and fill in ``result``."""
    port = runner.free_port()
    server = runner.Server(
        command=runner.server_command("uvicorn", "bench.shadow:app", port, workload.threads),
        port=port,
        env={"BENCH_THREADS": str(workload.threads)},
        log=out / "servers.log",
    )
    server.start(PLAIN)
    try:
        _measure(plan, workload, result, port, script)
    finally:
        server.stop()


def _measure(plan: Plan, workload: Workload, result: Result, port: int, script: Path) -> None:
    paths = [PLAIN, *SHADOWED]
    for path in paths:
        clients.warm_up(port, path, 20)
    runs: dict[str, list[runner.WrkResult]] = {path: [] for path in paths}
    rounds = max(plan.runs, 1) + (1 if plan.warmup_seconds else 0)
    for index in range(rounds):
        for path in paths:
            seconds = plan.warmup_seconds if plan.warmup_seconds and index == 0 else plan.seconds
            run = runner.run_wrk(
                script, f"http://127.0.0.1:{port}{path}", connections=workload.connections,
                seconds=seconds, expect_length=workload.expect_length,
                delay_ms=workload.delay_ms,
            )  # fmt: skip
            clients.settle(port, PLAIN)
            if plan.warmup_seconds and index == 0:
                continue  # the warm-up round
            runs[path].append(run)
            if not run.valid:
                result.valid = False
                result.notes.append(
                    f"{path}: {run.bad_status} non-2xx, {run.bad_length} wrong length, "
                    f"{run.good} good"
                )
    p99 = {path: statistics.median(r.p99_ms for r in found) for path, found in runs.items()}
    rate = {
        path: statistics.median(r.requests_per_second for r in found)
        for path, found in runs.items()
    }
    worst = max(SHADOWED, key=lambda path: p99[path])
    result.runs = [100 * r.p99_ms / p99[PLAIN] for r in runs[worst]]
    result.value = 100 * p99[worst] / p99[PLAIN]
    result.p50_ms = statistics.median(r.p50_ms for r in runs[worst])
    result.p99_ms = p99[worst]
    result.notes.append(f"no shadow: {rate[PLAIN]:,.0f} req/s, p99 {p99[PLAIN]:.2f} ms")
    for path, what in SHADOWED.items():
        result.notes.append(
            f"{what}: p99 {p99[path] / p99[PLAIN]:.2f}x, req/s {rate[path] / rate[PLAIN]:.2f}x"
        )
    result.notes.append("shadow runs: " + _counts(port))


def _counts(port: int) -> str:
    """The server's shadow outcomes, summed over the shadow routes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", METRICS_PATH)
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bridge_shadow_comparisons_total{"):
            labels, _, value = line.rpartition(" ")
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            totals[outcome] = totals.get(outcome, 0) + float(value)
    if not totals:
        raise clients.CheckFailed("The server reports no shadow comparisons at all.")
    return ", ".join(f"{int(n):,} {outcome}" for outcome, n in totals.items())
