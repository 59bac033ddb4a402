"""The ``limits`` group: bridge beside the limits of its own design, hello world in one run.

Five contenders, each on its own uvicorn process with one worker, all started before
the first measurement and measured in turns: a warm-up each, then round after round
of ``wrk -c32`` on every contender, the median of the rounds kept. Taking turns
means a change in the machine's load (it may be shared) touches every contender
alike, so the ratios of one run hold even when the absolute figures do not.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from .groups import Cell, Section, Start, _number, _ratio, all_serving, wrk_in_turns
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
# A few per cent is the question here, and on a shared machine one round's load can
# move a contender by 30 %: many short rounds, each ratio taken within its round.
ROUNDS = 9


def limits(plan: Plan, out: Path, progress: Progress) -> Section:
    """Every contender's hello world, measured in turns on its own uvicorn process."""
    starts = [
        Start(Cell("hello world", label, "req/s"), "uvicorn", target)
        for label, target, _ in CONTENDERS
    ]
    if not plan.quick:
        plan = dataclasses.replace(plan, runs=max(plan.runs, ROUNDS))
    with all_serving(out, progress, starts, {}) as live:
        wrk_in_turns(live, plan, out, progress, connections=CONNECTIONS)
    cells = [start.cell for start in starts]
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


def paired(cells: list[Cell], label: str, against: str) -> float | None:
    """The median over rounds of ``label``'s req/s over ``against``'s in the same round:
    the two ran one after the other, so a change in the machine's load between rounds
    moves both, where the ratio of two medians can pair a busy round with a quiet one."""
    mine = next((c for c in cells if c.contender == label and c.valid), None)
    theirs = next((c for c in cells if c.contender == against and c.valid), None)
    if mine is None or theirs is None or not mine.rounds:
        return None
    if len(mine.rounds) != len(theirs.rounds) or 0 in theirs.rounds:
        return None
    return statistics.median(a / b for a, b in zip(mine.rounds, theirs.rounds, strict=True))


def summary(cells: list[Cell]) -> str:
    """The ratios the goals are stated in, each paired within its rounds: metrics' cost,
    and bridge against the hop and the ceiling."""
    to_bare = paired(cells, DEFAULTS, NO_METRICS)
    to_hop = paired(cells, DEFAULTS, HOP)
    to_ceiling = paired(cells, DEFAULTS, CEILING)
    if to_bare is None or to_hop is None or to_ceiling is None:
        return "Some contenders failed; no ratios (see the notes and servers.log)."
    bare_to_hop = paired(cells, NO_METRICS, HOP)
    return (
        f"Paired round by round (the median of each round's ratio), bridge's defaults "
        f"serve {to_bare:.2f}x what `metrics=False` does, {to_hop:.2f}x the minimal thread "
        f"hop and {to_ceiling:.2f}x the pure-ASGI ceiling; `metrics=False` serves "
        f"{bare_to_hop or 0:.2f}x the minimal hop."
    )


LIMITS_METHOD = """Contenders, each on its own uvicorn process with one worker (`--http httptools`,
`--loop uvloop` where installed), all serving `GET /hello` of the same WSGI app (13
bytes with a Content-Length) but the ceiling:

{contenders}

The two reference adapters are in `bench/reference.py`; they hold whole bodies in
memory and know nothing of disconnects or limits, so they are marks, not adapters.
Every process is started first; each gets a warm-up run, then {runs} rounds of
`wrk -t1 -c{connections} -d{seconds}s` go to the contenders in turn, and each row is
the median of its rounds; the ratios under the table are the median of each round's
ratio, since the two contenders of a ratio ran one after the other. Every response's
status and body length is checked by wrk's `response()` hook. The thread-hop
contenders get 32 threads (`max_threads`, the executor's `max_workers`). Taking
turns puts any change in the machine's load on every contender alike: on a shared
machine the req/s move between runs, the ratios far less.
"""
