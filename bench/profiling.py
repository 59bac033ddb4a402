"""``--profile``: sample bridge under py-spy while wrk runs the hello-world workload."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from . import apps, clients, runner

TOP = 30


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
    """Profile ``Bridge`` on uvicorn for ``seconds`` of hello-world load; return the summary."""
    executable = py_spy()
    port = runner.free_port()
    script = out / "check.lua"
    script.write_text(runner.CHECK_LUA)
    server = runner.Server(
        command=runner.server_command("uvicorn", "bench.apps:bridge__micro", port, 32),
        port=port,
        env={"BENCH_THREADS": "32"},
        log=out / "servers.log",
    )
    server.start("/hello")
    raw = out / "profile.txt"
    try:
        clients.warm_up(port, "/hello", 200)
        assert server.process is not None
        recorder = subprocess.Popen(
            [
                executable, "record", "--pid", str(server.process.pid), "--duration",
                str(seconds), "--rate", "250", "--nonblocking", "--format", "raw",
                "--output", str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        load: list[runner.WrkResult] = []
        worker = threading.Thread(
            target=lambda: load.append(
                runner.run_wrk(
                    script, f"http://127.0.0.1:{port}/hello", connections=32,
                    seconds=seconds, expect_length=len(apps.HELLO),
                )
            )
        )  # fmt: skip
        worker.start()
        worker.join()
        _, errors = recorder.communicate(timeout=seconds + 30)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace').strip()}")
    finally:
        server.stop()
    summary = out / "profile.md"
    rate = load[0].requests_per_second if load else 0.0
    summary.write_text(summarize(raw.read_text(), rate))
    return summary


def summarize(raw: str, rate: float) -> str:
    """Top functions by own samples and by samples that include them, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [
        "# bridge under py-spy, hello world",
        "",
        f"{total} samples at 250 Hz of all busy threads, while wrk ran {rate:,.0f} req/s "
        "(under the profiler).",
        "",
        "## Own samples",
        "",
        "| % | function (file:line) |",
        "|--:|---|",
    ]
    lines += [f"| {100 * n / max(total, 1):.1f} | `{frame}` |" for frame, n in own.most_common(TOP)]
    lines += ["", "## Inclusive samples", "", "| % | function (file:line) |", "|--:|---|"]
    lines += [
        f"| {100 * n / max(total, 1):.1f} | `{frame}` |" for frame, n in inclusive.most_common(TOP)
    ]
    return "\n".join(lines) + "\n"
