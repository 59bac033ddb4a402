"""The ``limits`` group: bridge beside the limits of its own design, hello world in one run.

Five contenders, each on its own uvicorn process with one worker, all started before
the first measurement and measured in turns: a warm-up each, then round after round
of ``wrk -c32`` on every contender, the median of the rounds kept. Taking turns
means a change in the machine's load (it may be shared) touches every contender
alike, so the ratios of one run hold even when the absolute figures do not.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from pathlib import Path

from . import apps, clients, runner
from .groups import Cell, Section, _number, _ratio, serving
from .workloads import Plan, Progress

CEILING = "pure ASGI"
HOP = "minimal thread hop"
DEFAULTS = "bridge, defaults"
NO_METRICS = "bridge, metrics=False"

# label, bench.apps target, what it is; in the table's order, the ceiling first.
CONTENDERS: list[tuple[str, str, str]] = [
    (CEILING, "asgi__micro", "a pure-ASGI hello world: the server's ceiling"),
    (
        "inline on the loop",
        "inline__micro",
        "the WSGI hello called on the event loop, minimal environ "
        "(no adapter can be both faster and correct)",
    ),
    (
        HOP,
        "hop__micro",
        "minimal environ, `run_in_executor`, two sends: the least a thread-hop adapter does",
    ),
    (NO_METRICS, "bridge_metrics_off__micro", "`Bridge(app, metrics=False)`"),
    (DEFAULTS, "bridge__micro", "`Bridge(app)`"),
]
CONNECTIONS = 32


def limits(plan: Plan, out: Path, progress: Progress) -> Section:
    """Every contender's hello world, measured in turns on its own uvicorn process."""
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    cells = [Cell("hello world", label, "req/s") for label, _, _ in CONTENDERS]
    rounds: dict[str, list[runner.WrkResult]] = {label: [] for label, _, _ in CONTENDERS}
    with ExitStack() as stack:
        ports: dict[str, int] = {}
        for cell, (label, target, _) in zip(cells, CONTENDERS, strict=True):
            try:
                server = stack.enter_context(serving(out, "uvicorn", target, 32, {}))
            except RuntimeError as exc:
                cell.valid = False
                cell.notes.append(f"failed: {exc}")
                progress(f"{label:24} {cell.brief()}")
                continue
            ports[label] = server.port
        for port in ports.values():
            if plan.warmup_seconds:
                _run(script, port, plan.warmup_seconds)
            else:
                clients.warm_up(port, "/hello", 20)
        for number in range(plan.runs):
            for label, port in ports.items():
                result = _run(script, port, plan.seconds)
                rounds[label].append(result)
                progress(
                    f"round {number + 1}/{plan.runs} {label:24} "
                    f"{result.requests_per_second:,.1f} req/s"
                    + ("" if result.valid else "  INVALID")
                )
    for cell in cells:
        runs = rounds[cell.contender]
        if not runs:
            continue
        cell.value = statistics.median(r.requests_per_second for r in runs)
        cell.p50_ms = statistics.median(r.p50_ms for r in runs)
        cell.p99_ms = statistics.median(r.p99_ms for r in runs)
        cell.extra["rounds"] = len(runs)
        for result in runs:
            if not result.valid:
                cell.valid = False
                cell.notes.append(
                    f"{result.bad_status} non-2xx, {result.bad_length} wrong length, "
                    f"{result.good} good"
                )
            if result.socket_errors:
                cell.notes.append(
                    "socket errors: "
                    + ", ".join(f"{n} {kind}" for kind, n in result.socket_errors.items())
                )
    contenders = "\n".join(f"- **{label}**: {what}" for label, _, what in CONTENDERS)
    return Section(
        "limits",
        "Hello world against the limits of the design, one run on one uvicorn process each",
        limits_table(cells) + "\n" + summary(cells) + "\n",
        LIMITS_METHOD.format(
            contenders=contenders, runs=plan.runs, seconds=plan.seconds, connections=CONNECTIONS
        ),
        cells,
        readme=limits_table(cells, readme=True) + "\n" + summary(cells) + "\n",
    )


def _run(script: Path, port: int, seconds: int) -> runner.WrkResult:
    result = runner.run_wrk(
        script,
        f"http://127.0.0.1:{port}/hello",
        connections=CONNECTIONS,
        seconds=seconds,
        expect_length=len(apps.HELLO),
    )
    clients.settle(port, "/hello")  # what wrk left queued is served before the next turn
    return result


def _valid(cells: list[Cell], label: str) -> float | None:
    for cell in cells:
        if cell.contender == label:
            return cell.value if cell.valid else None
    return None


def limits_table(cells: list[Cell], readme: bool = False) -> str:
    """One line per contender: req/s, its ratio to the ceiling and to the minimal hop."""
    ceiling, hop = _valid(cells, CEILING), _valid(cells, HOP)
    lines = [
        "| contender | req/s | vs pure ASGI | vs minimal hop | p50 ms | p99 ms | check |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for cell in cells:
        value = cell.value if cell.valid else None
        shown = "INVALID" if not cell.valid else _number(cell.value)
        if cell.contender in (DEFAULTS, NO_METRICS):
            shown = f"**{shown}**"
        lines.append(
            f"| {cell.contender} | {shown} | {_ratio(value, ceiling)} | {_ratio(value, hop)} "
            f"| {_number(cell.p50_ms, 2)} | {_number(cell.p99_ms, 2)} "
            f"| {'ok' if cell.valid else 'INVALID'} |"
        )
    if readme:
        return "\n".join(lines) + "\n"
    notes = [f"{c.contender}: {'; '.join(c.notes)}" for c in cells if c.notes]
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


def summary(cells: list[Cell]) -> str:
    """The two ratios the goals are stated in: metrics' cost, and bridge against the hop."""
    defaults, bare = _valid(cells, DEFAULTS), _valid(cells, NO_METRICS)
    hop, ceiling = _valid(cells, HOP), _valid(cells, CEILING)
    if defaults is None or bare is None or hop is None or ceiling is None:
        return "Some contenders failed; no ratios (see the notes and servers.log)."
    return (
        f"bridge's defaults serve {defaults / bare:.2f}x what `metrics=False` does, "
        f"{defaults / hop:.2f}x the minimal thread hop and {defaults / ceiling:.2f}x the "
        f"pure-ASGI ceiling."
    )


LIMITS_METHOD = """Contenders, each on its own uvicorn process with one worker (`--http httptools`,
`--loop uvloop` where installed), all serving `GET /hello` of the same WSGI app (13
bytes with a Content-Length) but the ceiling:

{contenders}

The two reference adapters are in `bench/reference.py`; they hold whole bodies in
memory and know nothing of disconnects or limits, so they are marks, not adapters.
Every process is started first; each gets a warm-up run, then {runs} rounds of
`wrk -t1 -c{connections} -d{seconds}s` go to the contenders in turn, and each row is
the median of its rounds. Every response's status and body length is checked by wrk's
`response()` hook. The thread-hop contenders get 32 threads (`max_threads`, the
executor's `max_workers`). Taking turns puts any change in the machine's load on
every contender alike: on a shared machine the req/s move between runs, the ratios
far less.
"""
