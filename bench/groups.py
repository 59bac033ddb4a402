"""Benchmark groups beyond the micro workloads: each runs its cells and returns a ``Section``.

A group is a function ``(plan, out, progress) -> Section`` registered in ``GROUPS``
(one line per group); ``--only NAME`` runs just that group, and the report writes
each section's table into docs/benchmarks.md between markers of its own, so one
group can be rerun and republished without the others.
"""

from __future__ import annotations

import http.client
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import apps, clients, runner
from .workloads import Plan, Progress

MIB = 1024 * 1024


@dataclass
class Cell:
    """One measurement: a contender serving one path, its number and what was checked."""

    row: str  # what is measured (a view, a server, a feed)
    contender: str
    unit: str
    value: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    valid: bool = True
    notes: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # each round's value, in turn order

    def brief(self) -> str:
        value = "-" if self.value is None else f"{self.value:,.1f} {self.unit}"
        return value + ("" if self.valid else "  INVALID " + "; ".join(self.notes))


@dataclass
class Section:
    """A group's output: its markdown table, the method paragraph and the raw cells."""

    name: str
    title: str
    table: str
    method: str
    cells: list[Cell]
    readme: str = ""  # the headline lines for the README, if the group has any


Group = Callable[[Plan, Path, Progress], Section]


@contextmanager
def serving(
    out: Path, server: str, target: str, threads: int, env: dict[str, str], ready: str = "/hello"
) -> Iterator[runner.Server]:
    """A freshly started server for ``bench.apps:<target>``, stopped on the way out."""
    port = runner.free_port()
    process = runner.Server(
        command=runner.server_command(server, f"bench.apps:{target}", port, threads),
        port=port,
        env={"BENCH_THREADS": str(threads), **env},
        log=out / "servers.log",
    )
    process.start(ready)
    try:
        yield process
    finally:
        process.stop()


def expected_length(port: int, path: str) -> int:
    """The body length of one good answer to ``path``, read before a run checks every one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise clients.CheckFailed(f"GET {path} answered {response.status}: {body[:200]!r}")
    return len(body)


@dataclass(frozen=True)
class Start:
    """One contender of a group measured in turns: its cell, server, target and threads."""

    cell: Cell
    server: str
    target: str
    threads: int = 32
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def all_serving(
    out: Path, progress: Progress, starts: list[Start], env: dict[str, str]
) -> Iterator[list[tuple[Cell, runner.Server]]]:
    """Every contender started at once; one that fails to start marks its cell INVALID
    and is left out. All are stopped on the way out."""
    with ExitStack() as stack:
        live: list[tuple[Cell, runner.Server]] = []
        for start in starts:
            cell = start.cell
            try:
                server = serving(
                    out, start.server, start.target, start.threads, {**env, **start.env}
                )
                live.append((cell, stack.enter_context(server)))
            except RuntimeError as exc:
                cell.valid = False
                cell.notes.append(f"failed: {exc}")
                progress(f"{cell.row:24} {cell.contender:24} {cell.brief()}")
        yield live


def wrk_in_turns(
    live: list[tuple[Cell, runner.Server]],
    plan: Plan,
    out: Path,
    progress: Progress,
    path: str = "/hello",
    connections: int = 32,
    warmup: int | None = None,
    settle: str | None = None,
) -> None:
    """A warm-up each (``warmup`` seconds, else the plan's), then ``plan.runs`` rounds
    of wrk with the contenders in turns.

    Taking turns puts a change in the machine's load (it may be shared) on every
    contender alike, so the ratios of one run hold when the absolute figures do not.
    Each cell gets the median of its rounds, and every response is checked.
    """
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    expect: dict[int, int] = {}
    rounds: dict[int, list[runner.WrkResult]] = {}
    for index, (cell, process) in enumerate(live):
        try:
            expect[index] = expected_length(process.port, path)
        except (clients.CheckFailed, OSError) as exc:
            cell.valid = False
            cell.notes.append(f"failed: {exc}")
            continue
        rounds[index] = []

    def run(index: int, seconds: int) -> runner.WrkResult:
        port = live[index][1].port
        result = runner.run_wrk(
            script,
            f"http://127.0.0.1:{port}{path}",
            connections=connections,
            seconds=seconds,
            expect_length=expect[index],
        )
        clients.settle(port, settle or path)  # what wrk left queued is served first
        return result

    seconds = plan.warmup_seconds if warmup is None else warmup
    for index in rounds:
        if seconds:
            run(index, seconds)
        else:
            clients.warm_up(live[index][1].port, path, 20)
    for number in range(plan.runs):
        for index in rounds:
            cell = live[index][0]
            result = run(index, plan.seconds)
            rounds[index].append(result)
            progress(
                f"round {number + 1}/{plan.runs} {cell.row:18} {cell.contender:24} "
                f"{result.requests_per_second:,.1f} req/s" + ("" if result.valid else "  INVALID")
            )
    for index, runs in rounds.items():
        summarise(live[index][0], runs)


def summarise(cell: Cell, runs: list[runner.WrkResult]) -> None:
    """The median of ``runs`` into ``cell``, and every bad response in its notes."""
    cell.rounds = [r.requests_per_second for r in runs]
    cell.value = statistics.median(cell.rounds)
    cell.p50_ms = statistics.median(r.p50_ms for r in runs)
    cell.p99_ms = statistics.median(r.p99_ms for r in runs)
    cell.extra["rounds"] = len(runs)
    for result in runs:
        if not result.valid:
            cell.valid = False
            cell.notes.append(
                f"{result.bad_status} non-2xx, {result.bad_length} wrong length, {result.good} good"
            )
        if result.socket_errors:
            cell.notes.append(
                "socket errors: "
                + ", ".join(f"{n} {kind}" for kind, n in result.socket_errors.items())
            )


def wrk_cell(
    cell: Cell,
    plan: Plan,
    out: Path,
    port: int,
    path: str,
    *,
    connections: int = 32,
    settle: str = "/hello",
) -> None:
    """One contender's ``path`` alone (several paths of one server, say): a warm-up,
    then the median of ``plan.runs`` checked wrk runs."""
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    expect = expected_length(port, path)
    url = f"http://127.0.0.1:{port}{path}"

    def run(seconds: int) -> runner.WrkResult:
        result = runner.run_wrk(
            script, url, connections=connections, seconds=seconds, expect_length=expect
        )
        clients.settle(port, settle)
        return result

    if plan.warmup_seconds:
        run(plan.warmup_seconds)
    else:
        clients.warm_up(port, path, 20)
    summarise(cell, [run(plan.seconds) for _ in range(plan.runs)])


def attempt(
    cell: Cell, progress: Progress, measure: Callable[[], None], quiet: bool = False
) -> Cell:
    """Run one cell; a failure marks it INVALID with the reason instead of ending the run."""
    started = time.monotonic()
    try:
        measure()
    except (clients.CheckFailed, RuntimeError, OSError) as exc:
        cell.valid = False
        cell.notes.append(f"failed: {exc}")
    if quiet and cell.valid:
        return cell
    progress(
        f"{cell.row:24} {cell.contender:24} {cell.brief()}  ({time.monotonic() - started:.1f} s)"
    )
    return cell


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def _find(cells: list[Cell], row: str, contender: str) -> Cell | None:
    for cell in cells:
        if cell.row == row and cell.contender == contender:
            return cell
    return None


def _value(cells: list[Cell], row: str, contender: str) -> float | None:
    cell = _find(cells, row, contender)
    return None if cell is None or not cell.valid else cell.value


def _shown(cell: Cell | None, digits: int = 0) -> str:
    if cell is None:
        return ""
    if not cell.valid:
        return "INVALID"
    return _number(cell.value, digits)


# -- every server ------------------------------------------------------------------------

# (row label, ASGI server key, native WSGI label and server key, or None)
SERVERS: list[tuple[str, str, tuple[str, str] | None]] = [
    ("uvicorn", "uvicorn", None),
    ("granian (ASGI)", "granian-asgi", ("granian WSGI", "granian")),
    ("hypercorn", "hypercorn", ("hypercorn WSGI", "hypercorn")),
    ("daphne", "daphne", None),
    ("gunicorn -k asgi", "gunicorn-asgi", ("gunicorn sync", "gunicorn-sync")),
]


HOP = "minimal thread hop"


def file_size(plan: Plan) -> int:
    return (16 if plan.quick else 256) * MIB


def make_file(out: Path, size: int) -> Path:
    """A file of ``size`` zero bytes (sparse: it costs no disk, and reads from the page cache)."""
    path = out / f"download-{size // MIB}MiB.bin"
    if not path.exists() or path.stat().st_size != size:
        with path.open("wb") as handle:
            handle.truncate(size)
    return path


def servers(plan: Plan, out: Path, progress: Progress) -> Section:
    """Hello world and a file download on every server: bridge, the server's ceiling, its WSGI."""
    cells: list[Cell] = []
    size = file_size(plan)
    env = {"BENCH_FILE": str(make_file(out, size))}
    for label, server, native in SERVERS:
        runs = [
            ("bridge", server, "bridge__micro"),
            ("pure ASGI", server, "asgi__micro"),
            # bench/reference.py: it holds whole bodies in memory, so hello world only.
            (HOP, server, "hop__micro"),
        ]
        if native is not None:
            runs.append((native[0], native[1], "wsgi__micro"))
        hellos = [
            Start(Cell(label, contender, "req/s"), key, target) for contender, key, target in runs
        ]
        cells += [start.cell for start in hellos]
        # One server's contenders side by side, in turns; the next server's after them.
        with all_serving(out, progress, hellos, env) as live:
            try:
                wrk_in_turns(live, plan, out, progress)
            except (clients.CheckFailed, RuntimeError, OSError) as exc:
                for cell, _ in live:
                    cell.valid = False
                    cell.notes.append(f"failed: {exc}")
            for hello, process in live:
                if hello.contender == HOP:
                    continue
                download = Cell(label, hello.contender, "MiB/s")

                def fetch(download: Cell = download, process: runner.Server = process) -> None:
                    _download(download, plan, process, size)

                cells.append(attempt(download, progress, fetch))
    return Section(
        "servers",
        "Every server: bridge beside the server's own pure-ASGI hello and its native WSGI mode",
        servers_table(cells),
        SERVERS_METHOD.format(size=size // MIB),
        cells,
        readme=servers_readme(cells),
    )


def _download(cell: Cell, plan: Plan, process: runner.Server, size: int) -> None:
    if not plan.quick:
        clients.download_speed(process.port, size, "/file")  # warm-up: page cache, buffers
    speeds = [clients.download_speed(process.port, size, "/file") for _ in range(plan.runs)]
    cell.value = statistics.median(speeds)


def _hello_cells(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.unit == "req/s"]


def servers_table(cells: list[Cell]) -> str:
    lines = [
        "| server | bridge req/s | pure-ASGI hello req/s | bridge / ceiling | minimal hop req/s "
        "| bridge / hop | native WSGI | native req/s | bridge p99 ms | ceiling p99 ms "
        "| 256 MiB file: bridge MiB/s | pure ASGI MiB/s | native MiB/s |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for label, _, native in SERVERS:
        bridge = _find(cells, label, "bridge")
        if bridge is None:
            continue
        ceiling = _find(cells, label, "pure ASGI")
        native_hello = _find(cells, label, native[0]) if native else None
        files = [c for c in cells if c.row == label and c.unit == "MiB/s"]
        by_contender = {c.contender: c for c in files}
        lines.append(
            f"| {label} | **{_shown(bridge)}** | {_shown(ceiling)} "
            f"| {_ratio(_value(cells, label, 'bridge'), _value(cells, label, 'pure ASGI'))} "
            f"| {_shown(_find(cells, label, HOP))} "
            f"| {_ratio(_value(cells, label, 'bridge'), _value(cells, label, HOP))} "
            f"| {native[0] if native else 'none'} | {_shown(native_hello)} "
            f"| {_number(bridge.p99_ms, 2)} | {_number(ceiling.p99_ms if ceiling else None, 2)} "
            f"| {_shown(by_contender.get('bridge'))} | {_shown(by_contender.get('pure ASGI'))} "
            f"| {_shown(by_contender.get(native[0])) if native else ''} |"
        )
    notes = [f"{c.row}, {c.contender}: {'; '.join(c.notes)}" for c in cells if c.notes]
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


def servers_readme(cells: list[Cell]) -> str:
    lines = [
        "| server | bridge hello req/s | that server's pure-ASGI hello | ratio "
        "| minimal thread hop | bridge / hop | native WSGI |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for label, _, native in SERVERS:
        bridge = _value(cells, label, "bridge")
        if bridge is None:
            continue
        ceiling = _value(cells, label, "pure ASGI")
        own = f"{native[0]} {_shown(_find(cells, label, native[0]))}" if native else ""
        hop = _value(cells, label, HOP)
        lines.append(
            f"| {label} | **{_number(bridge)}** | {_number(ceiling)} "
            f"| {_ratio(bridge, ceiling)} | {_number(hop)} | {_ratio(bridge, hop)} | {own} |"
        )
    return "\n".join(lines) + "\n"


SERVERS_METHOD = """Each server runs one process with one worker and is started fresh for each
contender: `Bridge(micro)` (the same adapter as the main table, adaptive threads,
`max_threads=32`), a pure-ASGI app answering the same bytes (the server's ceiling),
the minimal thread hop of the `limits` group (`bench/reference.py`: minimal environ,
`run_in_executor` on 32 threads, two sends; hello world only, as it holds bodies in
memory), and the server's own WSGI mode where it has one (granian `--interface wsgi` with 32
blocking threads, hypercorn serving the WSGI callable itself, gunicorn `-k sync`).
Hello world is `wrk -t1 -c32` as in the main table, but one server's contenders are
all started together and measured in turns (a warm-up each, then three rounds, each
contender once a round; the median is kept), so the ratios within a server hold on
a busy machine; the servers follow one another. The file download is one client
reading a {size} MiB file served through `wsgi.file_wrapper` (the pure-ASGI app sends
it with `http.response.pathsend` where the server offers that extension, else in 1 MiB
chunks); median of three downloads after one warm-up. uvicorn and daphne have no native
WSGI mode (uvicorn's `--interface wsgi` is an adapter, and deprecated).
"""


# -- Django and Flask ---------------------------------------------------------------------

VIEWS = [("hello", "/hello"), ("one ORM query", "/orm"), ("template page", "/page")]
GTHREADS = 8

FRAMEWORK_CONTENDERS: dict[str, list[tuple[str, str, str, int]]] = {
    # label, server, wrapper, threads
    "Django": [
        ("bridge", "uvicorn", "bridge", 32),
        ("Django ASGI", "uvicorn", "djangoasgi", 32),
        ("gunicorn sync", "gunicorn-sync", "wsgi", 1),
        (f"gunicorn gthread {GTHREADS}", "gunicorn-gthread", "wsgi", GTHREADS),
    ],
    "Flask": [
        ("bridge", "uvicorn", "bridge", 32),
        ("gunicorn sync", "gunicorn-sync", "wsgi", 1),
        (f"gunicorn gthread {GTHREADS}", "gunicorn-gthread", "wsgi", GTHREADS),
    ],
}


def prepare_frameworks(out: Path) -> dict[str, str]:
    """Migrate and seed the Django database and create the Flask one; return their env."""
    import os
    import subprocess
    import sys

    from . import flasksite

    django_db = out / "django.sqlite3"
    flask_db = out / "flask.sqlite3"
    env = {"BENCH_DJANGO_DB": str(django_db), "BENCH_FLASK_DB": str(flask_db)}
    if not django_db.exists():
        seed = (
            "import django; django.setup(); from django.core.management import call_command; "
            "call_command('migrate', verbosity=0); from django.contrib.auth.models import User; "
            "User.objects.create_user('bench', 'bench@example.com', 'not-a-password')"
        )
        subprocess.run(
            [sys.executable, "-c", seed],
            env={
                **os.environ,
                **env,
                "DJANGO_SETTINGS_MODULE": "bench.djangosite.settings",
            },
            check=True,
        )
    flasksite.prepare(str(flask_db))
    return env


def frameworks(plan: Plan, out: Path, progress: Progress) -> Section:
    """Django and Flask views through bridge, Django's ASGI handler and gunicorn."""
    env = prepare_frameworks(out)
    cells: list[Cell] = []
    for framework, contenders in FRAMEWORK_CONTENDERS.items():
        app = framework.lower()
        if plan.quick and framework != "Django":
            contenders = contenders[:1]  # --quick checks the harness: Flask under bridge only
        # cells[view][contender]; the first view's cells stand for the started servers.
        grid = [
            [Cell(f"{framework} {view}", contender, "req/s") for contender, *_ in contenders]
            for view, _ in VIEWS
        ]
        starts = [
            Start(grid[0][n], server, f"{wrapper}__{app}", threads)
            for n, (_, server, wrapper, threads) in enumerate(contenders)
        ]
        # One framework's contenders side by side, view by view, in turns.
        with all_serving(out, progress, starts, env) as live:
            column = {id(cell): n for n, cell in enumerate(grid[0])}
            for row, (_, path) in zip(grid, VIEWS, strict=True):
                view_live = [(row[column[id(cell)]], process) for cell, process in live]
                try:
                    wrk_in_turns(view_live, plan, out, progress, path=path)
                except (clients.CheckFailed, RuntimeError, OSError) as exc:
                    for cell, _ in view_live:
                        cell.valid = False
                        cell.notes.append(f"failed: {exc}")
        for row in grid:
            for cell, first in zip(row, grid[0], strict=True):
                if cell.value is None and cell.valid and not first.valid:
                    cell.valid = False  # its server never started: say why on every view
                    cell.notes = list(first.notes)
            cells.extend(row)
    return Section(
        "frameworks",
        "Django and Flask, through bridge, Django's own ASGI handler and gunicorn",
        frameworks_table(cells),
        FRAMEWORKS_METHOD.format(gthreads=GTHREADS),
        cells,
        readme=frameworks_table(cells, readme=True),
    )


def frameworks_table(cells: list[Cell], readme: bool = False) -> str:
    contenders = ["bridge", "Django ASGI", "gunicorn sync", f"gunicorn gthread {GTHREADS}"]
    head = "| view | " + " | ".join(contenders) + " | bridge / gunicorn sync |"
    lines = [head, "|---|" + "--:|" * (len(contenders) + 1)]
    for row in dict.fromkeys(cell.row for cell in cells):
        shown = [_find(cells, row, c) for c in contenders]
        values = [f"**{_shown(shown[0])}**", *(_shown(c) for c in shown[1:])]
        ratio = _ratio(_value(cells, row, "bridge"), _value(cells, row, "gunicorn sync"))
        lines.append(f"| {row} | " + " | ".join(values) + f" | {ratio} |")
    if readme:
        return "\n".join(lines) + "\n"
    notes = [f"{c.row}, {c.contender}: {'; '.join(c.notes)}" for c in cells if c.notes]
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


FRAMEWORKS_METHOD = """A fresh Django project (`startproject` settings: the default middleware and
apps, SQLite; `bench/djangosite`) with three views: a constant, one ORM query
(`User.objects.get(username=...)`) and a template page of 20 rows; and the same three
in Flask (`bench/flasksite`: `sqlite3` for the query, Jinja for the page). One process
each: bridge over the project's WSGI application on uvicorn (adaptive threads,
`max_threads=32`), Django's own ASGI handler on uvicorn, gunicorn `-k sync` and
`-k gthread --threads {gthreads}`. One framework's contenders are started together and
each view is measured in turns (a warm-up each, then three rounds, one run of each
contender a round), `wrk -t1 -c32`, every response's status and length checked; the
expected length is read once before the runs.
"""


# -- adaptive threads against fixed counts ------------------------------------------------

THREAD_ROWS: list[tuple[str, str, str, str, int, list[int], int]] = [
    # row, server target, path, settle path, connections, fixed counts, the one --quick runs
    ("Django ORM view (CPU-bound)", "bridge__django", "/orm", "/hello", 32, [1, 2, 4, 8, 32], 2),
    ("view waiting 20 ms (I/O-bound)", "bridge__micro", "/sleep", "/hello", 256, [8, 32, 64], 64),
]


def thread_counts(plan: Plan, out: Path, progress: Progress) -> Section:
    """The ORM view and the 20 ms view: adaptive (the default) against fixed thread counts."""
    env = prepare_frameworks(out)
    cells: list[Cell] = []
    for row, target, path, settle, connections, fixed, quick in THREAD_ROWS:
        ceiling = max(fixed)
        if plan.quick:
            fixed = [quick]  # --quick checks the harness: one fixed count per view
        contenders = [("adaptive", ceiling, "1"), *((f"fixed {n}", n, "0") for n in fixed)]
        starts = [
            Start(Cell(row, contender, "req/s"), "uvicorn", target, threads,
                  {"BENCH_ADAPTIVE": adaptive})
            for contender, threads, adaptive in contenders
        ]  # fmt: skip
        cells += [start.cell for start in starts]
        # Every count side by side, in turns. The adaptive pool finds its level in the
        # first seconds, so every warm-up is as long as it needs.
        warmup = max(plan.warmup_seconds, 1 if plan.quick else 3)
        with all_serving(out, progress, starts, env) as live:
            try:
                wrk_in_turns(
                    live, plan, out, progress, path=path, connections=connections,
                    warmup=warmup, settle=settle,
                )  # fmt: skip
            except (clients.CheckFailed, RuntimeError, OSError) as exc:
                for cell, _ in live:
                    cell.valid = False
                    cell.notes.append(f"failed: {exc}")
    for row, *_ in THREAD_ROWS:
        if row.startswith("view waiting"):
            ideal = 64 / apps.SLEEP_SECONDS
            for cell in cells:
                if cell.row == row and cell.value is not None:
                    cell.extra["vs_ideal"] = cell.value / ideal
    return Section(
        "threads",
        "Threads that size themselves: the adaptive default against fixed thread counts",
        threads_table(cells),
        THREADS_METHOD,
        cells,
        readme=threads_table(cells, readme=True),
    )


def threads_table(cells: list[Cell], readme: bool = False) -> str:
    lines = [
        "| view | adaptive (default) | best fixed | adaptive / best fixed | fixed counts |",
        "|---|--:|--:|--:|---|",
    ]
    for row, *_ in THREAD_ROWS:
        adaptive = _find(cells, row, "adaptive")
        fixed = [c for c in cells if c.row == row and c.contender.startswith("fixed")]
        valid = [c for c in fixed if c.valid and c.value is not None]
        if adaptive is None:
            continue
        best = max(valid, key=lambda c: c.value or 0.0, default=None)
        spread = ", ".join(f"{c.contender.removeprefix('fixed ')}: {_shown(c)}" for c in fixed)
        best_text = f"{_number(best.value)} ({best.contender})" if best else ""
        ratio = _ratio(adaptive.value if adaptive.valid else None, best.value if best else None)
        ideal = adaptive.extra.get("vs_ideal")
        shown = _shown(adaptive) + (f" ({ideal:.2f}x ideal)" if ideal else "")
        lines.append(f"| {row} | **{shown}** | {best_text} | {ratio} | {spread} |")
    if readme:
        return "\n".join(lines) + "\n"
    notes = [f"{c.row}, {c.contender}: {'; '.join(c.notes)}" for c in cells if c.notes]
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


THREADS_METHOD = """bridge on uvicorn with `Bridge(app, max_threads=N)` (adaptive, the default;
`N` is the ceiling) and `Bridge(app, max_threads=N, adaptive_threads=False)` (all `N`
run at once), every count of one view started together and measured in turns. The
ORM view is the Django view above under `wrk -c32`; the 20 ms view is
`time.sleep(0.02)` under `wrk -c256`, whose ideal with 64 threads is 3,200 req/s.
Every count gets a 3 s warm-up: the adaptive pool starts open, at the ceiling, and
halves every 0.5 s while its workers contend for the GIL (the ORM view), or doubles
while the CPU is idle and calls queue (the 20 ms view, from 32 to 64 in 0.5 s).
"""


GROUPS: dict[str, Group] = {
    "servers": servers,
    "frameworks": frameworks,
    "threads": thread_counts,
}
