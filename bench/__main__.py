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

from . import registry, report, runner, workloads
from .groups import Section

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
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument(
        "--only", action="append", help="run only this group or micro workload (repeatable): "
        + ", ".join(["micro", *registry.GROUPS]) + "; or one of "
        + ", ".join(w.name for w in workloads.workloads(workloads.Plan.make(False, 1, 1))),
    )  # fmt: skip
    parser.add_argument(
        "--idle-connections",
        type=int,
        help="connections each idle-connection cell holds (default 10000, 200 with --quick)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="copy this run's tables into docs/benchmarks.md and the README (only the "
        "groups that ran; everything else in those files is kept)",
    )
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
    if args.publish and args.quick:
        print("--publish copies a run into the docs; a --quick run checks the harness only, "
              "so run without --quick to publish.", file=sys.stderr)  # fmt: skip
        return 2
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
            if args.publish:
                for path in report.publish_profile(summary):
                    print(f"Published into {path}")
            print(f"Profile written to {summary} (raw samples and flame graphs beside it).")
            return 0
        plan = workloads.Plan.make(args.quick, args.runs, args.duration)
        facts = {**report.machine(), "loop": runner.uvicorn_loop()}
        load = facts["load average at start (1, 5, 15 min)"]
        print(f"Writing to {out}; {facts['cpus (nproc)']} cpus, load average {load}.")
        warning = busy_warning(os.getloadavg()[0], os.cpu_count() or 1)
        if warning:
            print(warning, flush=True)
        if args.idle_connections:
            os.environ["BENCH_IDLE_CONNECTIONS"] = str(args.idle_connections)
        only = set(args.only or ())
        unknown = only - {"micro", *registry.GROUPS, *(w.name for w in workloads.workloads(plan))}
        if unknown:
            print(f"Unknown --only {', '.join(sorted(unknown))}; see --help.", file=sys.stderr)
            return 2
        micro = {w.name for w in workloads.workloads(plan)} & only
        progress = lambda line: print(line, flush=True)  # noqa: E731
        results: list[workloads.Result] = []
        if not only or "micro" in only or micro:
            results = workloads.run_all(
                plan,
                out,
                progress,
                only=micro if micro and "micro" not in only else set(),
                contenders=set(args.contender or ()),
            )
        sections: list[Section] = []
        for name in registry.GROUPS:
            if not only or name in only:
                started = time.monotonic()
                print(f"-- {name}", flush=True)
                sections.append(registry.load(name)(plan, out, progress))
                print(f"-- {name}: {time.monotonic() - started:.0f} s", flush=True)
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
            sections,
        )  # fmt: skip
        if args.publish:
            for path in report.publish(out, results, sections):
                print(f"Published into {path}")
    except KeyboardInterrupt:
        print("Interrupted; every server was stopped.", file=sys.stderr)
        return 130
    finally:
        runner.stop_all()
    print()
    print(text)
    print(f"Written: {out / 'results.md'}, results.json, chart.png, benchmarks.md, readme.md")
    return 0


def busy_warning(load: float, cpus: int) -> str:
    """A warning when the machine is already busy, or '' when it is not."""
    if load <= cpus:
        return ""
    return (
        f"Warning: the load average is {load:.1f} on {cpus} cpus. Past the cores, the CPU is "
        "shared by thread, so contenders with many threads (bridge, the thread hops) get more "
        "of it than single-threaded ones and the ratios lean their way; publish from a quiet "
        "machine."
    )


def profiling_run(out: Path, seconds: int) -> Path:
    from .profiling import profile_hello

    return profile_hello(out, seconds)


if __name__ == "__main__":
    sys.exit(main())
