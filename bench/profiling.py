"""``--profile``: sample bridge under py-spy while wrk loads it, and say where the time goes.

Two scenarios, each on a fresh uvicorn process with ``Bridge(micro)``:

* hello world (``-c32``), sampled with ``--gil``: only the thread holding the GIL is
  recorded, so the samples split the one core Python can use between the event
  loop and the worker threads, frame by frame;
* the view that waits 20 ms (64 threads, ``-c256``), sampled with ``--idle``: every
  thread in every state, so the samples show where a worker spends a request
  (sleeping in the view, waiting for a call, waiting for the GIL).

Each writes a raw profile, a flame graph (SVG, from a second py-spy attached to the
same process for the same seconds) and a summary: the split between the loop and the
workers, by category (``CATEGORIES``), and the top frames.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import apps, runner

TOP = 25


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    threads: int
    connections: int
    mode: str  # the py-spy flag: "--gil" or "--idle"
    expect: int
    rate: int  # samples per second: 65 threads under --idle cost py-spy 65 reads a sample


SCENARIOS = [
    Scenario("hello", "hello world, GIL holders", "/hello", 32, 32, "--gil", len(apps.HELLO), 250),
    Scenario("sleep", "view waiting 20 ms, every thread", "/sleep", 64, 256, "--idle", 2, 50),
]

# Where a sample's own (innermost) frame places it, first match wins: (label, substrings).
# A worker whose own frame is ThreadPool._work is blocked in the queue's get() (or,
# holding the GIL there, just woken from it).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("worker: in the view (bench.apps.micro)", ("micro (bench/apps.py",)),
    ("worker: waiting for a call, or waking from the wait", ("ThreadPool._work (",)),
    ("worker: the adaptive gate", ("bridge/sizing.py",)),
    ("loop: HTTP parsing and writing (uvicorn, httptools)", ("uvicorn/",)),
    ("bridge code on the loop or in a worker", ("bridge/",)),
    ("loop: the event loop itself (uvloop in C, asyncio)", ("asyncio/", "Runner.run")),
]


def py_spy() -> str:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError(
            "--profile needs py-spy: install it with `.venv/bin/python -m pip install py-spy`."
        )
    return found


def profile_hello(out: Path, seconds: int) -> Path:
    """Profile every scenario for ``seconds`` each; return the summary (profile.md)."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    parts = [
        "# bridge under py-spy",
        "",
        f"`scripts/bench --profile --duration {seconds}`; {os.cpu_count()} cpus, load average "
        f"{load} (1, 5, 15 min) at the start. The flame graphs are `profile-*.svg` beside "
        "the summary in the results directory.",
        "",
    ]
    for scenario in SCENARIOS:
        raw, rate = _record(out, scenario, seconds)
        parts.append(summarize(raw.read_text(), rate, scenario))
    summary = out / "profile.md"
    summary.write_text("\n".join(parts))
    return summary


def _record(out: Path, scenario: Scenario, seconds: int) -> tuple[Path, float]:
    executable = py_spy()
    port = runner.free_port()
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    server = runner.Server(
        command=runner.server_command(
            "uvicorn", "bench.apps:bridge__micro", port, scenario.threads
        ),
        port=port,
        env={"BENCH_THREADS": str(scenario.threads)},
        log=out / "servers.log",
    )
    server.start("/hello")
    raw = out / f"profile-{scenario.name}.txt"
    recorders: list[subprocess.Popen[bytes]] = []
    svg = out / f"profile-{scenario.name}.svg"
    try:
        url = f"http://127.0.0.1:{port}{scenario.path}"
        # Warm-up under load: code paths, the pool, and the adaptive limit's climb.
        runner.run_wrk(
            script, url, connections=scenario.connections, seconds=3, expect_length=scenario.expect
        )
        assert server.process is not None
        base = [
            executable, "record", "--pid", str(server.process.pid), "--duration", str(seconds),
            "--rate", str(scenario.rate), "--nonblocking", "--threads", scenario.mode,
        ]  # fmt: skip
        recorders += [
            subprocess.Popen(
                [*base, "--format", fmt, "--output", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for fmt, path in (("raw", raw), ("flamegraph", svg))
        ]
        load: list[runner.WrkResult] = []
        worker = threading.Thread(
            target=lambda: load.append(
                runner.run_wrk(
                    script, url, connections=scenario.connections, seconds=seconds,
                    expect_length=scenario.expect,
                )
            )
        )  # fmt: skip
        worker.start()
        worker.join()
        for recorder in recorders:
            _, errors = recorder.communicate(timeout=seconds + 120)
            if recorder.returncode != 0:
                raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace').strip()}")
    finally:
        for recorder in recorders:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        server.stop()
    return raw, (load[0].requests_per_second if load else 0.0)


def _category(frames: list[str]) -> str:
    for label, needles in CATEGORIES:
        if any(needle in frames[-1] for needle in needles):
            return label
    if any("bridge/sizing.py" in frame for frame in frames):
        return "worker: the adaptive gate"
    return "other (library code: werkzeug, threading, ...)"


def summarize(raw: str, rate: float, scenario: Scenario | None = None) -> str:
    """The thread split, categories and top frames, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread (", "process ")):
            thread_frames = [f for f in frames if f.startswith("thread (")]
            frames = [f for f in frames if not f.startswith(("thread (", "process "))]
            kind = "worker threads" if any("_work (bridge/threads" in f for f in frames) else ""
            threads[kind or ("event loop" if thread_frames else "other")] += count
        if not frames:
            continue
        own[frames[-1]] += count
        categories[_category(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
    title = scenario.title if scenario else "hello world"
    mode = scenario.mode if scenario else ""
    per_request = f", {1e6 / rate:.0f} us per request" if rate else ""

    def share(n: int) -> str:
        return f"{100 * n / max(total, 1):.1f}"

    lines = [
        f"## {title}",
        "",
        f"{total} samples at {scenario.rate if scenario else 250} Hz (py-spy {mode}) while wrk "
        f"ran {rate:,.0f} req/s under the profiler{per_request}.",
        "",
        "| % of samples | thread |",
        "|--:|---|",
        *(f"| {share(n)} | {name} |" for name, n in threads.most_common()),
        "",
        "| % of samples | where |",
        "|--:|---|",
        *(f"| {share(n)} | {name} |" for name, n in categories.most_common()),
        "",
        "### Own samples",
        "",
        "| % | function (file:line) |",
        "|--:|---|",
        *(f"| {share(n)} | `{frame}` |" for frame, n in own.most_common(TOP)),
        "",
        "### Inclusive samples (bridge frames)",
        "",
        "| % | function (file:line) |",
        "|--:|---|",
        *(
            f"| {share(n)} | `{frame}` |"
            for frame, n in inclusive.most_common()
            if "bridge/" in frame
        ),
    ]
    return "\n".join(lines[: lines.index("### Inclusive samples (bridge frames)") + 4 + TOP]) + "\n"
