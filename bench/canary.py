"""The canary group: what a canary route costs a request in each arm, and what a fallback costs.

One bridge server on uvicorn, one legacy app that answers hello world at every path,
and these paths measured in turn with wrk, every response checked:

* ``/plain``: no route, the legacy app alone (the legacy arm's reference);
* ``/route``: an async view answering hello world, no canary (the view arm's reference);
* ``/canary/view``: the same view behind ``canary=Canary(share=1.0, key="header:X-User")``;
* ``/canary/legacy``: the same behind a canary at share 0: every request to the legacy app;
* ``/canary/fallback``: a canary view that raises on every request, so the legacy app
  answers each one through the fallback (``min_requests`` too high to roll back).

Each canary path is reported beside its reference, as ratios of requests per second and
of p99, from the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import apps, runner
from .groups import Cell, Section, attempt, wrk_cell
from .plan import Plan

PLAIN = "/plain"
ROUTE = "/route"
# (path, what it is, the path it is compared with)
ROWS = [
    (PLAIN, "legacy app alone", PLAIN),
    (ROUTE, "async view, no canary", ROUTE),
    ("/canary/view", "canary, view arm", ROUTE),
    ("/canary/legacy", "canary, legacy arm", PLAIN),
    ("/canary/fallback", "canary, view raises: fallback", PLAIN),
]

METHOD = (
    "One uvicorn process serving one `Bridge` (hello-world legacy app and async view); wrk "
    "with 32 connections, every response's status and length checked, the median of the "
    "runs after a warm-up. Each canary row is compared with its reference from the same "
    "run: the view arm with the same view without a canary, the legacy arm and the "
    "fallback with the legacy app alone. The fallback row includes logging each fallback "
    "with the view's traceback, as a failing canary does."
)


def legacy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The legacy app: hello world, whatever the path."""
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(apps.HELLO)))]
    )
    return [apps.HELLO]


def _application() -> Any:
    import logging

    from werkzeug.wrappers import Response

    from bridge import Bridge, Canary

    # The fallback row logs a record a request; keep them off the terminal.
    logging.getLogger("bridge").propagate = False
    bridge = Bridge(legacy, max_threads=apps.threads())
    keyed = Canary(share=1.0, key="header:X-User")

    async def hello(request: Any) -> Any:
        return Response(apps.HELLO, content_type="text/plain")

    async def broken(request: Any) -> Any:
        raise RuntimeError("a broken canary view")

    bridge.route(ROUTE, methods=["GET"])(hello)
    bridge.route("/canary/view", methods=["GET"], canary=keyed)(hello)
    bridge.route("/canary/legacy", methods=["GET"], canary=0.0)(hello)
    never_rolled_back = Canary(share=1.0, min_requests=10**12)
    bridge.route("/canary/fallback", methods=["GET"], canary=never_rolled_back)(broken)
    return bridge


def __getattr__(name: str) -> Any:
    """``bench.canary:app``, built on first import (by the server process only)."""
    if name != "app":
        raise AttributeError(f"bench.canary has no attribute {name!r}.")
    app = globals()["app"] = _application()
    return app


def canary_group(plan: Plan, out: Path, progress: Callable[[str], None]) -> Section:
    """``scripts/bench``'s group "canary": a ``bench.groups.Section`` of the run."""
    threads = apps.threads()
    port = runner.free_port()
    server = runner.Server(
        command=runner.server_command("uvicorn", "bench.canary:app", port, threads),
        port=port,
        env={"BENCH_THREADS": str(threads)},
        log=out / "servers.log",
    )
    server.start(PLAIN)
    cells: list[Cell] = []
    try:
        for path, what, _ in ROWS:
            cell = Cell(what, "bridge", "req/s")
            cells.append(attempt(cell, progress, lambda c=cell, p=path: wrk_cell(
                c, plan, out, port, p, settle=PLAIN)))  # fmt: skip
    finally:
        server.stop()
    return Section("canary", "Canary routes: each arm against its reference", table(cells),
                   METHOD, cells)  # fmt: skip


def table(cells: list[Cell]) -> str:
    """The markdown table: each row with its ratios to its reference."""
    by_row = {cell.row: cell for cell in cells}
    what_of = {path: what for path, what, _ in ROWS}
    lines = [
        "| path | what | req/s | p99 ms | req/s vs reference | p99 vs reference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for path, what, reference in ROWS:
        cell, base = by_row.get(what), by_row.get(what_of[reference])
        if cell is None or not cell.valid or cell.value is None:
            lines.append(f"| `{path}` | {what} | INVALID | | | |")
            continue
        rate = p99 = ""
        if path != reference and base is not None and base.valid and base.value:
            rate = f"{cell.value / base.value:.2f}x"
            if cell.p99_ms is not None and base.p99_ms:
                p99 = f"{cell.p99_ms / base.p99_ms:.2f}x"
        p99_ms = "" if cell.p99_ms is None else f"{cell.p99_ms:.2f}"
        lines.append(f"| `{path}` | {what} | {cell.value:,.0f} | {p99_ms} | {rate} | {p99} |")
    return "\n".join(lines) + "\n"
