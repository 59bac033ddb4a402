"""The outputs of a run: the markdown table, results.json, chart.png and benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from .workloads import CONTENDERS, Result, Workload

PACKAGES = [
    "bridge", "uvicorn", "uvloop", "httptools", "a2wsgi", "asgiref", "gunicorn", "granian",
    "werkzeug",
]  # fmt: skip

HEADER = (
    "| Workload | Contender | Result | p50 ms | p99 ms | vs a2wsgi | vs ceiling | Check | Notes |",
    "|---|---|--:|--:|--:|--:|--:|---|---|",
)


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def table(results: list[Result], plan_workloads: list[Workload]) -> str:
    """One markdown line per contender per workload."""
    titles = {w.name: w for w in plan_workloads}
    lines = list(HEADER)
    for result in results:
        workload = titles[result.workload]
        skipped = any(note.startswith("skipped") for note in result.notes)
        check = "skipped" if skipped else ("ok" if result.valid else "INVALID")
        value = "" if result.value is None else f"{_number(result.value)} {result.unit}"
        contender = f"**{result.contender}**" if result.contender == "bridge" else result.contender
        lines.append(
            f"| {workload.title} | {contender} | {value} | {_number(result.p50_ms, 2)} "
            f"| {_number(result.p99_ms, 2)} | {_ratio(result.vs_a2wsgi)} "
            f"| {_ratio(result.vs_ceiling)} | {check} | {'; '.join(result.notes)} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, str]:
    """The machine and the versions a run used, so a table can be reproduced or discounted."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": model or "unknown",
        "kernel": platform.platform(),
        "python": sys.version.split()[0],
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else "",
        "load average at start (1, 5, 15 min)": load,
        **{f"{name}": version for name, version in versions.items()},
    }


def chart(results: list[Result], plan_workloads: list[Workload], path: Path) -> None:
    """Bars per workload, one per contender, bridge highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [w for w in plan_workloads if any(r.workload == w.name for r in results)]
    columns = 2
    rows = (len(shown) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    for index, workload in enumerate(shown):
        axis = axes[index // columns][index % columns]
        rows_here = [r for r in results if r.workload == workload.name and r.value is not None]
        names = [r.contender for r in rows_here]
        values = [r.value or 0.0 for r in rows_here]
        colours = [
            "#d62728" if r.contender == "bridge" else ("#bbbbbb" if not r.valid else "#1f77b4")
            for r in rows_here
        ]
        axis.barh(names, values, color=colours)
        axis.invert_yaxis()
        better = "higher" if workload.higher_is_better else "lower"
        axis.set_title(f"{workload.title} ({workload.unit}, {better} is better)", fontsize=10)
        axis.tick_params(labelsize=8)
        for bar_index, value in enumerate(values):
            label = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
            axis.text(value, bar_index, f" {label}", va="center", fontsize=7)
    for index in range(len(shown), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def document(
    results: list[Result],
    plan_workloads: list[Workload],
    command: str,
    facts: dict[str, str],
    plan: dict[str, Any],
) -> str:
    """benchmarks.md: the method, the exact command, the machine and the table."""
    contenders = "\n".join(f"- **{c.name}**: {c.description}" for c in CONTENDERS)
    machine_lines = "\n".join(f"| {key} | {value} |" for key, value in facts.items())
    return f"""# Benchmarks

Produced by `scripts/bench`, which writes this file into its results directory
(`bench/results/<time>/`, or `--out DIR`) beside `results.md`, `results.json`,
`chart.png` and `servers.log`. `docs/benchmarks.md` is a copy of it, with the chart
copied to `docs/benchmarks.png`.

Command:

```
{command}
```

![chart](chart.png)

{table(results, plan_workloads)}
Check: `ok` when every response had a 2xx status and the expected body length
(checked by a wrk `response()` hook, or by the Python client); `INVALID` otherwise.
Ratios divide the result by a2wsgi's and by the ceiling's: the pure-ASGI app on the
same uvicorn, or, for the 20 ms view, the ideal of threads / latency. For the rows in
ms and MiB, lower is better, so a ratio below 1 is better there.

## Machine

| | |
|---|---|
{machine_lines}

## Method

Plan: {json.dumps(plan)}.

Contenders, each on one server process with one worker, all in one run:

{contenders}

Every uvicorn contender runs `--http httptools --loop {facts.get("loop", "uvloop")}
--log-level warning --no-access-log`. The adapters and the threaded servers get the
same thread count: 32 (`max_threads`, a2wsgi's `workers`, gunicorn's `--threads`,
granian's `--blocking-threads`), 64 for the 20 ms view. asgiref's `WsgiToAsgi` has no
such option: it runs every request on one thread.

Workloads, each on a freshly started server, a discarded warm-up first:

- Hello world: `GET /hello`, 13 bytes, `wrk -t1 -c32 --latency`. wrk gets one thread
  because it shares the machine's cores with the server.
- View waiting 20 ms: `time.sleep(0.02)` then 2 bytes, 64 threads, `wrk -t1 -c256`;
  the ceiling is the ideal 64 / 0.02 s = 3,200 req/s.
- Sample app page: `GET /api/items/1` (else `/health`) of `sample_wsgi_app`, a SQLite
  query per request, `wrk -t1 -c32`; the expected length is read once before the run.
- 1 MiB upload echo: `POST /echo` with a 1 MiB body (wrk's Lua `wrk.body`); the app
  reads it in 64 KiB chunks and answers the length, `wrk -t1 -c32`.
- 64 MiB streamed download: a generator of 64 KiB chunks (no Content-Length), read
  by one Python client as fast as it can; the median of 3 downloads, in MiB/s.
- First byte of a slow stream: the app yields a first chunk, sleeps 50 ms, yields a
  second; the time from sending the request to holding the first chunk, over 50
  sequential requests, p50 and p99.
- Peak RSS growth: one client uploads 256 MiB to `/echo` then downloads 256 MiB, on one
  connection (gunicorn's sync worker closes it between the two); the RSS of the server
  and its child processes is sampled every 10 ms; the result is the peak minus the RSS
  measured just before, after a 4 MiB warm-up transfer.

wrk rows are the median of the runs (req/s, and separately p50 and p99 latency).
Socket errors (timeouts, resets) are listed in the notes. A contender that fails
requests is marked INVALID with the counts; its tracebacks are in `servers.log`.
Numbers from a machine that is busy with other work are noisy: the load average at
the start and the end of the run is in the machine table.
"""


def write(
    out: Path,
    results: list[Result],
    plan_workloads: list[Workload],
    command: str,
    facts: dict[str, str],
    plan: dict[str, Any],
) -> str:
    """Write results.md, results.json, chart.png and benchmarks.md to ``out``; return the table."""
    text = table(results, plan_workloads)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": facts,
                "plan": plan,
                "results": [asdict(result) for result in results],
            },
            indent=2,
        )
        + "\n"
    )
    chart(results, plan_workloads, out / "chart.png")
    (out / "benchmarks.md").write_text(document(results, plan_workloads, command, facts, plan))
    return text
