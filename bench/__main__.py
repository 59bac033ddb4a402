"""``python -m bench``: run every contender on every workload and write the report."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from . import report, runner, workloads

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark bridge against the other ways to serve WSGI, on one machine.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one 1 s run per contender and tiny workloads: checks the harness, not speed",
    )
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/<time>)")
    parser.add_argument("--runs", type=int, default=3, help="runs per wrk workload (median)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--only", action="append", help="run only this workload (repeatable): "
        + ", ".join(w.name for w in workloads.workloads(workloads.Plan.make(False, 1, 1)))
        + ", fanout",
    )  # fmt: skip
    parser.add_argument(
        "--contender", action="append", help="run only this contender (repeatable): "
        + ", ".join(repr(c.name) for c in workloads.CONTENDERS),
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, sample bridge under py-spy during hello world",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally below stops every server.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: install it with `apt-get install wrk`.", file=sys.stderr)
        return 2
    out = args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.profile:
            summary = profiling_run(out, args.duration)
            print(summary.read_text())
            print(f"Profile written to {summary} (raw samples in {out / 'profile.txt'}).")
            return 0
        plan = workloads.Plan.make(args.quick, args.runs, args.duration)
        facts = {**report.machine(), "loop": runner.uvicorn_loop()}
        load = facts["load average at start (1, 5, 15 min)"]
        print(f"Writing to {out}; {facts['cpus (nproc)']} cpus, load average {load}.")
        only = set(args.only or ())
        if not only or "fanout" in only:  # live events: bench/fanout.py
            from . import fanout

            fanned = fanout.run(out, plan.quick, lambda line: print(line, flush=True))
            if only == {"fanout"}:
                print(f"\n{fanned}\nWritten: {out / 'fanout.md'}, fanout.json, fanout.png")
                return 0
        results = workloads.run_all(
            plan,
            out,
            lambda line: print(line, flush=True),
            only=only - {"fanout"},
            contenders=set(args.contender or ()),
        )
        facts["load average at end (1, 5, 15 min)"] = " ".join(f"{n:.2f}" for n in os.getloadavg())
        command = "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = report.write(
            out,
            results,
            workloads.workloads(plan),
            command.strip(),
            facts,
            {"quick": plan.quick, "runs": plan.runs, "seconds": plan.seconds,
             "warmup_seconds": plan.warmup_seconds},
        )  # fmt: skip
    except KeyboardInterrupt:
        print("Interrupted; every server was stopped.", file=sys.stderr)
        return 130
    finally:
        runner.stop_all()
    print()
    print(text)
    print(f"Written: {out / 'results.md'}, results.json, chart.png, benchmarks.md, fanout.md")
    return 0


def profiling_run(out: Path, seconds: int) -> Path:
    from .profiling import profile_hello

    return profile_hello(out, seconds)


if __name__ == "__main__":
    sys.exit(main())
