"""The contenders and workloads of one benchmark run, and the loop that runs each on each."""

from __future__ import annotations

import http.client
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import apps, clients, runner

# Re-exported: the groups, the report and the command take them from here.
from .plan import Plan as Plan
from .plan import Result as Result
from .plan import Workload as Workload

MIB = 1024 * 1024


@dataclass(frozen=True)
class Contender:
    """One way of serving the same WSGI app: a server and, for ASGI servers, an adapter."""

    name: str
    server: str
    wrapper: str
    description: str
    requires: str = ""  # a Bridge method or keyword argument this variant needs

    def skip_reason(self) -> str:
        """Why this contender cannot run with the installed bridge, or '' when it can."""
        if self.requires and not apps.bridge_supports(self.requires):
            return f"skipped: Bridge has no `{self.requires}` yet"
        return ""


CONTENDERS = [
    Contender("bridge", "uvicorn", "bridge", "`Bridge(app)` on uvicorn"),
    Contender(
        "bridge + 20 routes",
        "uvicorn",
        "bridge_routes",
        "`Bridge(app)` with 20 async routes the requests never match",
        requires="route",
    ),
    Contender(
        "bridge metrics on",
        "uvicorn",
        "bridge_metrics_on",
        "`Bridge(app, metrics=True)`",
        requires="metrics",
    ),
    Contender(
        "bridge metrics off",
        "uvicorn",
        "bridge_metrics_off",
        "`Bridge(app, metrics=False)`",
        requires="metrics",
    ),
    Contender("a2wsgi", "uvicorn", "a2wsgi", "a2wsgi `WSGIMiddleware` on uvicorn"),
    Contender("asgiref", "uvicorn", "asgiref", "asgiref `WsgiToAsgi` on uvicorn"),
    Contender("gunicorn sync", "gunicorn-sync", "wsgi", "gunicorn `-k sync`, 1 worker"),
    Contender("gunicorn gthread", "gunicorn-gthread", "wsgi", "gunicorn `-k gthread`, 1 worker"),
    Contender("granian wsgi", "granian", "wsgi", "granian `--interface wsgi`, 1 worker"),
    Contender("pure ASGI", "uvicorn", "asgi", "a pure-ASGI app on uvicorn (the ceiling)"),
]

VARIANTS = {"bridge + 20 routes", "bridge metrics on", "bridge metrics off"}


def workloads(plan: Plan) -> list[Workload]:
    """The workloads of the benchmark; ``--quick`` shrinks every one but the two hello worlds."""
    quick = plan.quick
    upload = 64 * 1024 if quick else MIB
    download = (8 if quick else 64) * MIB
    each_way = (16 if quick else 256) * MIB
    return [
        Workload(
            "hello", "Hello world", "wrk", "req/s",
            expect_length=len(apps.HELLO), variants=True,
        ),
        Workload(
            "paced", "Hello world at one load for all (32 conns, 7 ms pause)", "wrk", "req/s",
            expect_length=len(apps.HELLO), delay_ms=7,
        ),
        Workload(
            "sleep", "View waiting 20 ms (I/O-bound)", "wrk", "req/s", path="/sleep",
            threads=64, connections=64 if quick else 256, expect_length=2, ceiling="ideal",
            warmup=0 if quick else 3,
        ),
        Workload(
            "sample", "Sample app page with a database query", "wrk", "req/s",
            app="sample", ceiling="",
        ),
        Workload(
            "upload", f"{_size(upload)} upload echo", "wrk", "req/s", path="/echo",
            method="POST", upload_bytes=upload, expect_length=len(str(upload)),
        ),
        Workload(
            "download", f"{_size(download)} streamed download", "download", "MiB/s",
            size=download,
        ),
        Workload(
            "first-byte", "First byte of a slow stream", "first-byte", "ms p50",
            higher_is_better=False, size=5 if quick else 50,
        ),
        Workload(
            "memory", f"Peak RSS growth, {_size(each_way)} each way", "memory", "MiB",
            higher_is_better=False, size=each_way,
        ),
        Workload(  # bench/shadow.py
            "shadow", "Client p99 with a raising or sleeping shadow view (worst)", "shadow",
            "% of p99 without", higher_is_better=False, ceiling="",
            expect_length=len(apps.HELLO), connections=16, delay_ms=20,
        ),
    ]  # fmt: skip


def _size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


def applies(workload: Workload, contender: Contender) -> bool:
    """Whether ``contender`` runs ``workload``: the ceiling only where it means something."""
    if workload.kind == "shadow":
        return contender.name == "bridge"  # bridge against itself without the shadow
    if contender.name in VARIANTS:
        return workload.variants
    if contender.wrapper == "asgi":
        return workload.ceiling == "asgi"
    return True


def sample_path(port: int) -> tuple[str, int]:
    """The sample-app page to load, ``/api/items/1`` or else ``/health``, and its body length."""
    for path in ("/api/items/1", "/health"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status == 200:
            return path, len(body)
    raise clients.CheckFailed("The sample app answers neither /api/items/1 nor /health with 200.")


Progress = Callable[[str], None]


def run_all(
    plan: Plan,
    out: Path,
    progress: Progress,
    only: set[str] | None = None,
    contenders: set[str] | None = None,
) -> list[Result]:
    """Run every applicable contender on every workload; servers are always stopped."""
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    results: list[Result] = []
    for workload in workloads(plan):
        if only and workload.name not in only:
            continue
        for contender in CONTENDERS:
            if contenders and contender.name not in contenders:
                continue
            if not applies(workload, contender):
                continue
            result = Result(workload.name, contender.name, workload.unit)
            results.append(result)
            skip = contender.skip_reason()
            if workload.app == "sample" and not apps.has_sample():
                skip = skip or "skipped: sample_wsgi_app has no create_app() or app yet"
            if skip:
                result.valid = False
                result.notes.append(skip)
                progress(f"{workload.name:10} {contender.name:20} {skip}")
                continue
            started = time.monotonic()
            try:
                _run_one(plan, workload, contender, result, out, script)
            except (clients.CheckFailed, RuntimeError, OSError) as exc:
                result.valid = False
                result.notes.append(f"failed: {exc}")
            progress(
                f"{workload.name:10} {contender.name:20} {_brief(result)}"
                f"  ({time.monotonic() - started:.1f} s)"
            )
    compare(results, workloads(plan))
    return results


def _brief(result: Result) -> str:
    value = "-" if result.value is None else f"{result.value:,.1f} {result.unit}"
    return value + ("" if result.valid else "  INVALID " + "; ".join(result.notes))


def _run_one(
    plan: Plan, workload: Workload, contender: Contender, result: Result, out: Path, script: Path
) -> None:
    if workload.kind == "shadow":
        from . import shadow  # serves its own app: the same route with and without a shadow

        shadow.run(plan, workload, result, out, script)
        return
    port = runner.free_port()
    server = runner.Server(
        command=runner.server_command(
            contender.server, f"bench.apps:{contender.wrapper}__{workload.app}", port,
            workload.threads,
        ),
        port=port,
        env={
            "BENCH_THREADS": str(workload.threads),
            "SAMPLE_DATA_DIR": str(out / "sample-data"),
            "SAMPLE_SECRET_KEY": "benchmark-only",
        },
        log=out / "servers.log",
    )  # fmt: skip
    server.start("/health" if workload.app == "sample" else "/hello")
    try:
        _measure(plan, workload, result, server, script)
    finally:
        server.stop()


def _measure(
    plan: Plan, workload: Workload, result: Result, server: runner.Server, script: Path
) -> None:
    port = server.port
    if workload.kind == "wrk":
        path, expect = workload.path, workload.expect_length
        if workload.app == "sample":
            path, expect = sample_path(port)
            result.notes.append(f"GET {path}")
        url = f"http://127.0.0.1:{port}{path}"

        def wrk(seconds: int) -> runner.WrkResult:
            run = runner.run_wrk(
                script, url, connections=workload.connections, seconds=seconds,
                expect_length=expect, method=workload.method,
                upload_bytes=workload.upload_bytes, delay_ms=workload.delay_ms,
            )  # fmt: skip
            clients.settle(port, "/health" if workload.app == "sample" else "/hello")
            return run

        if plan.warmup_seconds:
            wrk(max(plan.warmup_seconds, workload.warmup))
        elif workload.method == "GET":
            clients.warm_up(port, path, 20)
        runs = [wrk(plan.seconds) for _ in range(plan.runs)]
        result.runs = [run.requests_per_second for run in runs]
        result.value = statistics.median(result.runs)
        result.p50_ms = statistics.median(run.p50_ms for run in runs)
        result.p99_ms = statistics.median(run.p99_ms for run in runs)
        for run in runs:
            if run.good == 0 and run.bad_status == run.bad_length == 0:
                result.valid = False
                result.notes.append(f"no response within the {plan.seconds} s run")
            elif not run.valid:
                result.valid = False
                result.notes.append(
                    f"{run.bad_status} non-2xx, {run.bad_length} wrong length, {run.good} good"
                )
        errors: dict[str, int] = {}
        for run in runs:
            for key, count in run.socket_errors.items():
                errors[key] = errors.get(key, 0) + count
        if errors:
            result.notes.append(
                "socket errors: " + ", ".join(f"{n} {key}" for key, n in errors.items())
            )
    elif workload.kind == "download":
        clients.download_speed(port, workload.size)  # warm-up
        result.runs = [
            clients.download_speed(port, workload.size) for _ in range(max(plan.runs, 3))
        ]
        result.value = statistics.median(result.runs)
    elif workload.kind == "first-byte":
        clients.first_byte(port)  # warm-up
        times = sorted(clients.first_byte(port) * 1000 for _ in range(workload.size))
        result.runs = times
        result.p50_ms = statistics.median(times)
        result.p99_ms = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        result.value = result.p50_ms
    elif workload.kind == "memory":
        memory = clients.peak_memory(port, server.processes(), workload.size)
        result.value = memory.growth_mib
        result.baseline_mib = memory.baseline_mib
        result.runs = [memory.growth_mib]
        result.notes.append(f"baseline {memory.baseline_mib:.1f} MiB")


def compare(results: list[Result], plan_workloads: list[Workload]) -> None:
    """Fill in each result's ratio to a2wsgi and to the workload's ceiling (ASGI or ideal)."""
    by_name = {workload.name: workload for workload in plan_workloads}
    for result in results:
        workload = by_name[result.workload]
        if result.value is None:
            continue
        reference = _value(results, result.workload, "a2wsgi")
        if reference and reference > 0:
            result.vs_a2wsgi = result.value / reference
        if workload.ceiling == "ideal":
            result.vs_ceiling = result.value / workload.ideal
        elif workload.ceiling == "asgi":
            ceiling = _value(results, result.workload, "pure ASGI")
            if ceiling and ceiling > 0:
                result.vs_ceiling = result.value / ceiling


def _value(results: list[Result], workload: str, contender: str) -> float | None:
    for result in results:
        if result.workload == workload and result.contender == contender and result.valid:
            return result.value
    return None
