"""The outputs of a run: the markdown table, results.json, chart.png and benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from .groups import Section
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


INTRO = """# Benchmarks

Produced by `scripts/bench`, which writes this file into its results directory
(`bench/results/<time>/`, or `--out DIR`) beside `results.md`, `results.json`,
`chart.png`, `readme.md` and `servers.log`. `scripts/bench --publish` copies each
table of the run into the block of the same name here (between its
`<!-- bench:NAME -->` markers) and into the README, and leaves the rest of both
files as it is: `scripts/bench --only idle --publish` refreshes the idle-connection
table alone. Groups: `micro` (the table below), `limits`, `servers`, `frameworks`,
`threads`, `idle`; `--profile` samples the hot path instead.
"""

MARK = "<!-- bench:{} -->"
END = "<!-- /bench:{} -->"


def block(name: str, body: str) -> str:
    """``body`` between the markers that ``publish`` replaces."""
    return f"{MARK.format(name)}\n{body.strip()}\n{END.format(name)}\n"


def stamp(command: str, facts: dict[str, str]) -> str:
    start = facts.get("load average at start (1, 5, 15 min)", "")
    end = facts.get("load average at end (1, 5, 15 min)", "")
    return (
        f"_Measured by `{command}` on {facts.get('date', '')} ({facts.get('cpus (nproc)', '?')} "
        f"cpus; load average {start} at the start, {end} at the end)._"
    )


def micro_document(
    results: list[Result],
    plan_workloads: list[Workload],
    command: str,
    facts: dict[str, str],
    plan: dict[str, Any],
) -> str:
    """The main table: the method, the exact command, the machine and the table."""
    contenders = "\n".join(f"- **{c.name}**: {c.description}" for c in CONTENDERS)
    machine_lines = "\n".join(f"| {key} | {value} |" for key, value in facts.items())
    return f"""## Adapters and WSGI servers, one uvicorn process each

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

### Machine

| | |
|---|---|
{machine_lines}

### Method

Plan: {json.dumps(plan)}.

Contenders, each on one server process with one worker, all in one run:

{contenders}

Every uvicorn contender runs `--http httptools --loop {facts.get("loop", "uvloop")}
--log-level warning --no-access-log`. The adapters and the threaded servers get the
same thread count: 32 (`max_threads`, a2wsgi's `workers`, gunicorn's `--threads`,
granian's `--blocking-threads`), 64 for the 20 ms view. bridge sizes its threads
itself below that ceiling (the default, `adaptive_threads=True`). asgiref's
`WsgiToAsgi` has no such option: it runs every request on one thread.

Workloads, each on a freshly started server, a discarded warm-up first (3 s for the
20 ms view, the time bridge's adaptive pool needs to climb to 64 threads):

- Hello world: `GET /hello`, 13 bytes, `wrk -t1 -c32 --latency`. wrk gets one thread
  because it shares the machine's cores with the server.
- Hello world at one load: the same with a 7 ms pause between each connection's
  requests, so every contender is offered the same rate and p99 compares fairly.
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


def section_document(section: Section, command: str, facts: dict[str, str]) -> str:
    return f"## {section.title}\n\n{section.table}\n{section.method}\n{stamp(command, facts)}\n"


# The README's headline rows of the main table: (workload, label, the value shown).
README_ROWS = [
    ("hello", "hello world, req/s", "value"),
    ("sleep", "view waiting 20 ms, 64 threads, req/s", "value"),
    ("paced", "p99 at one load, ms", "p99"),
    ("sample", "sample app `GET /api/items/1`, req/s", "value"),
    ("upload", "1 MiB upload echo, req/s", "value"),
    ("download", "64 MiB streamed download, MiB/s", "value"),
    ("first-byte", "first byte of a slow stream, p50 ms", "value"),
    ("memory", "peak RSS growth, 256 MiB each way, MiB", "value"),
]
README_CONTENDERS = ["bridge", "a2wsgi", "gunicorn gthread", "granian wsgi", "pure ASGI"]


def micro_readme(results: list[Result]) -> str:
    """The README's table of the main workloads, from the run's results."""
    lines = [
        "| workload | bridge | a2wsgi | gunicorn gthread | granian (native WSGI) | pure ASGI "
        "| bridge vs a2wsgi | bridge vs ceiling |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for workload, label, shown in README_ROWS:
        row = {r.contender: r for r in results if r.workload == workload}
        bridge = row.get("bridge")
        if bridge is None:
            continue
        digits = 2 if workload in ("paced", "first-byte") else (1 if workload == "memory" else 0)

        def cell(result: Result | None, shown: str = shown, digits: int = digits) -> str:
            if result is None:
                return ""
            if not result.valid:
                return "INVALID"
            return _number(result.p99_ms if shown == "p99" else result.value, digits)

        ceiling = "ideal 3,200" if workload == "sleep" else cell(row.get("pure ASGI"))
        values = [f"**{cell(bridge)}**", *(cell(row.get(c)) for c in README_CONTENDERS[1:-1])]
        ratios = "" if shown == "p99" else _ratio(bridge.vs_a2wsgi)
        vs_ceiling = "" if shown == "p99" else _ratio(bridge.vs_ceiling)
        lines.append(
            f"| {label} | " + " | ".join(values) + f" | {ceiling} | {ratios} | {vs_ceiling} |"
        )
    return "\n".join(lines) + "\n"


def document(
    results: list[Result],
    plan_workloads: list[Workload],
    command: str,
    facts: dict[str, str],
    plan: dict[str, Any],
    sections: Sequence[Section] = (),
) -> str:
    """benchmarks.md: the intro, then one marked block per part of the run."""
    parts = [INTRO]
    if results:
        parts.append(block("micro", micro_document(results, plan_workloads, command, facts, plan)))
    parts += [block(s.name, section_document(s, command, facts)) for s in sections]
    return "\n".join(parts)


def readme_blocks(results: list[Result], sections: Sequence[Section]) -> dict[str, str]:
    """The README's blocks of this run, by marker name."""
    blocks = {"readme-micro": micro_readme(results)} if results else {}
    blocks.update({f"readme-{s.name}": s.readme for s in sections if s.readme})
    return blocks


def write(
    out: Path,
    results: list[Result],
    plan_workloads: list[Workload],
    command: str,
    facts: dict[str, str],
    plan: dict[str, Any],
    sections: Sequence[Section] = (),
) -> str:
    """Write results.md, results.json, chart.png, benchmarks.md and readme.md; return the tables."""
    facts.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    text = table(results, plan_workloads) if results else ""
    for section in sections:
        text += f"\n## {section.title}\n\n{section.table}"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": facts,
                "plan": plan,
                "results": [asdict(result) for result in results],
                "sections": {s.name: [asdict(cell) for cell in s.cells] for s in sections},
            },
            indent=2,
        )
        + "\n"
    )
    if results:
        chart(results, plan_workloads, out / "chart.png")
    (out / "benchmarks.md").write_text(
        document(results, plan_workloads, command, facts, plan, sections)
    )
    readme = readme_blocks(results, sections)
    (out / "readme.md").write_text("\n".join(block(k, v) for k, v in readme.items()))
    return text


ROOT = Path(__file__).resolve().parent.parent


def replace_blocks(text: str, blocks: dict[str, str], append: bool) -> str:
    """``text`` with each marked block replaced; a missing one is appended when ``append``."""
    for name, body in blocks.items():
        mark, end = MARK.format(name), END.format(name)
        begin = text.find(mark)
        finish = text.find(end, begin + 1) if begin >= 0 else -1
        if begin >= 0 and finish >= 0:
            text = text[:begin] + block(name, body).rstrip("\n") + text[finish + len(end) :]
        elif append:
            last = text.rfind("<!-- /bench:")
            at = text.find("-->", last) + 3 if last >= 0 else len(text)
            text = text[:at] + "\n\n" + block(name, body) + text[at:]
        else:
            raise LookupError(f"The README has no {mark} block to replace; add the markers.")
    return text


def publish(
    out: Path, results: list[Result], sections: list[Section], root: Path = ROOT
) -> list[Path]:
    """Copy this run's blocks into docs/benchmarks.md and README.md; keep everything else."""
    generated = (out / "benchmarks.md").read_text()
    blocks: dict[str, str] = {}
    for name in (["micro"] if results else []) + [s.name for s in sections]:
        mark, end = MARK.format(name), END.format(name)
        body = generated[generated.index(mark) + len(mark) : generated.index(end)]
        blocks[name] = body.replace("![chart](chart.png)", "![chart](benchmarks.png)")
    docs = root / "docs" / "benchmarks.md"
    current = docs.read_text() if docs.exists() else INTRO
    docs.write_text(replace_blocks(current, blocks, append=True))
    written = [docs]
    if results:
        (root / "docs" / "benchmarks.png").write_bytes((out / "chart.png").read_bytes())
        written.append(root / "docs" / "benchmarks.png")
    readme = root / "README.md"
    readme.write_text(
        replace_blocks(readme.read_text(), readme_blocks(results, sections), append=False)
    )
    written.append(readme)
    return written


def publish_profile(summary: Path, root: Path = ROOT) -> list[Path]:
    """Copy ``--profile``'s summary into docs/benchmarks.md's ``profile`` block."""
    body = summary.read_text().replace("\n### ", "\n#### ").replace("\n## ", "\n### ")
    body = body.replace("# bridge under py-spy", "## The hot path under py-spy", 1)
    docs = root / "docs" / "benchmarks.md"
    docs.write_text(replace_blocks(docs.read_text(), {"profile": body}, append=True))
    return [docs]
