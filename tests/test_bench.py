"""``scripts/bench --quick`` runs every contender and group and writes their tables.

Numbers are not checked (the machine may be busy); what is checked is that every
contender produced a line, every response was checked, and that the report can be
published into the docs without touching anything but its own blocks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import busy_warning
from bench.groups import Cell, Section, threads_table
from bench.idle import idle_table
from bench.limits import CONTENDERS as LIMIT_CONTENDERS
from bench.limits import limits_table, summary

ROOT = Path(__file__).resolve().parent.parent

# Every contender that must produce a number with the bridge of today; the bridge
# variants (routes, metrics) may be skipped until bridge has those features.
CORE = ["bridge", "a2wsgi", "asgiref", "gunicorn sync", "gunicorn gthread", "granian wsgi"]
ROW = re.compile(r"^\| (?P<workload>[^|]+) \| (?P<contender>[^|]+) \| (?P<result>[^|]*) \|")


def _rows(table: str) -> list[dict[str, str]]:
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"Not a table row: {line!r}"
        rows.append({key: value.strip().strip("*") for key, value in match.groupdict().items()})
    return rows


def bench(out: Path, *args: str, timeout: float = 200) -> str:
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(out), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@pytest.mark.live
@pytest.mark.timeout(240)
@needs_wrk
def test_quick_bench_writes_one_line_per_contender(tmp_path: Path) -> None:
    out = tmp_path / "results"
    text = bench(out, "--only", "micro")

    table = (out / "results.md").read_text()
    assert table in text, "the table is printed to stdout too"
    hello = [row for row in _rows(table) if row["workload"] == "Hello world"]
    names = [row["contender"] for row in hello]
    for name in [*CORE, "pure ASGI"]:
        assert names.count(name) == 1, f"{name} should have one hello-world line: {names}"
        (row,) = (row for row in hello if row["contender"] == name)
        assert re.fullmatch(r"[\d,]+\.\d req/s", row["result"]), row
    workloads = {row["workload"] for row in _rows(table)}
    assert len(workloads) == 9, workloads

    data = json.loads((out / "results.json").read_text())
    assert data["machine"]["cpus (nproc)"] == str(os.cpu_count())
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")
    document = (out / "benchmarks.md").read_text()
    assert "scripts/bench --quick" in document
    assert "<!-- bench:micro -->" in document and "<!-- bench:idle -->" not in document
    assert "<!-- bench:readme-micro -->" in (out / "readme.md").read_text()


@pytest.mark.live
@pytest.mark.timeout(300)
@needs_wrk
def test_quick_bench_runs_every_group(tmp_path: Path) -> None:
    out = tmp_path / "results"
    groups = ["servers", "frameworks", "threads", "idle"]
    bench(out, *(f"--only={g}" for g in groups), "--idle-connections", "100", timeout=260)

    data = json.loads((out / "results.json").read_text())
    assert data["results"] == [] and sorted(data["sections"]) == sorted(groups)
    cells = {name: [Cell(**cell) for cell in rows] for name, rows in data["sections"].items()}
    # Every server answered hello world through bridge and as a pure-ASGI app.
    servers = {(c.row, c.contender) for c in cells["servers"] if c.unit == "req/s" and c.value}
    for server in ("uvicorn", "granian (ASGI)", "hypercorn", "daphne", "gunicorn -k asgi"):
        assert {(server, "bridge"), (server, "pure ASGI")} <= servers, servers
        assert (server, "minimal thread hop") in servers, servers
    assert ("granian (ASGI)", "granian WSGI") in servers
    # The 16 MiB file came through whole on every server (the client checks the bytes).
    files = [c for c in cells["servers"] if c.unit == "MiB/s"]
    assert files and all(c.valid and c.value for c in files), files
    frameworks = cells["frameworks"]
    assert all(c.value for c in frameworks), [c for c in frameworks if not c.value]
    assert {c.contender for c in frameworks} >= {"bridge", "Django ASGI", "gunicorn sync"}
    assert {c.contender for c in cells["threads"]} >= {"adaptive", "fixed 2", "fixed 64"}
    # Every idle feed opened, got its first message and was still open at the end: three
    # contenders on both feeds, and the hand-written generator on SSE alone.
    idle = cells["idle"]
    assert len(idle) == 7 and all(c.valid and c.value is not None for c in idle), idle
    assert ("SSE", "generator by hand") in {(c.row, c.contender) for c in idle}

    document = (out / "benchmarks.md").read_text()
    for group in groups:
        assert f"<!-- bench:{group} -->" in document
    readme = (out / "readme.md").read_text()
    assert "<!-- bench:readme-idle -->" in readme and "<!-- bench:readme-servers -->" in readme


@pytest.mark.live
@pytest.mark.timeout(120)
@needs_wrk
def test_quick_limits_prints_every_contender_from_one_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    text = bench(out, "--only", "limits", timeout=100)

    labels = [label for label, _, _ in LIMIT_CONTENDERS]
    assert labels == [
        "pure ASGI",
        "inline on the loop",
        "minimal thread hop",
        "bridge, metrics=False",
        "bridge, defaults",
    ]
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0].removeprefix("| ") for line in rows] == labels, text
    for line in rows:
        # Every response was checked, and every row has its two ratios.
        assert line.endswith("| ok |"), line
        assert re.search(r"\| [\d.]+x \| [\d.]+x \|", line), line
    assert rows[0].startswith("| pure ASGI | ") and "| 1.00x |" in rows[0]
    assert re.search(r"bridge's defaults serve [\d.]+x what `metrics=False` does", text), text
    data = json.loads((out / "results.json").read_text())
    cells = [Cell(**cell) for cell in data["sections"]["limits"]]
    assert [c.contender for c in cells] == labels
    assert all(c.valid and c.value and c.extra["rounds"] == 1 for c in cells), cells
    assert "<!-- bench:readme-limits -->" in (out / "readme.md").read_text()


# -- the report, without servers ----------------------------------------------------------


def test_blocks_are_replaced_in_place_and_new_ones_appended() -> None:
    text = "intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nhand-written tail\n"
    updated = report.replace_blocks(text, {"a": "new a", "b": "new b"}, append=True)
    assert "old a" not in updated and "new a" in updated
    assert updated.startswith("intro\n") and updated.endswith("hand-written tail\n")
    assert updated.index("new a") < updated.index("new b") < updated.index("hand-written")
    with pytest.raises(LookupError, match="bench:c"):
        report.replace_blocks(text, {"c": "x"}, append=False)


def test_publish_touches_only_the_groups_that_ran(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "benchmarks.md").write_text(
        report.INTRO
        + report.block("micro", "micro table, kept")
        + report.block("idle", "old idle table")
        + "\n## A section appended by hand\n"
    )
    (root / "README.md").write_text(
        "# readme\n" + report.block("readme-idle", "old headline") + "the rest\n"
    )
    cells = [
        Cell("SSE", "bridge", "KiB/conn", value=12.0),
        Cell("SSE", "plain ASGI", "KiB/conn", value=10.0),
    ]
    section = Section("idle", "Idle", idle_table(cells), "method", cells, readme="new headline")
    out = tmp_path / "out"
    out.mkdir()
    report.write(out, [], [], "scripts/bench --only idle", {}, {}, [section])
    report.publish(out, [], [section], root=root)

    docs = (root / "docs" / "benchmarks.md").read_text()
    assert "micro table, kept" in docs and "old idle table" not in docs
    assert "| SSE | **bridge** | 12.0 | 1.20x |" in docs
    assert docs.rstrip().endswith("## A section appended by hand")
    readme = (root / "README.md").read_text()
    assert "new headline" in readme and "old headline" not in readme
    assert readme.endswith("the rest\n")


def test_a_busy_machine_is_named_before_the_run() -> None:
    assert busy_warning(1.9, 2) == ""
    warning = busy_warning(10.4, 2)
    assert warning.startswith("Warning: the load average is 10.4 on 2 cpus.")
    assert "publish from a quiet machine" in warning


def test_the_limits_table_divides_by_the_ceiling_and_the_hop() -> None:
    values = [40_000.0, 36_000.0, 16_000.0, 18_000.0, 17_200.0]
    # Three rounds; the second was busy for everyone, the third for the last two only.
    load = [(1.0, 0.5, 1.0), (1.0, 0.5, 1.0), (1.0, 0.5, 1.0), (1.0, 0.5, 0.6), (1.0, 0.5, 0.6)]
    cells = [
        Cell("hello world", label, "req/s", value=value, rounds=[value * f for f in factors])
        for (label, _, _), value, factors in zip(LIMIT_CONTENDERS, values, load, strict=True)
    ]
    table = limits_table(cells)
    assert "| pure ASGI | 40,000 | 1.00x | 2.50x |" in table
    assert "| minimal thread hop | 16,000 | 0.40x | 1.00x |" in table
    assert "| bridge, defaults | **17,200** | 0.43x | 1.07x |" in table
    # Each ratio is the median of the rounds' own: the third round pairs the busy
    # defaults with a busy metrics=False (0.96x) but with a quiet hop (0.65x).
    assert summary(cells) == (
        "Paired round by round (the median of each round's ratio), bridge's defaults "
        "serve 0.96x what `metrics=False` does, 1.07x the minimal thread hop and 0.43x "
        "the pure-ASGI ceiling; `metrics=False` serves 1.12x the minimal hop."
    )
    cells[2].valid = False
    cells[2].notes.append("3 non-2xx, 0 wrong length, 9 good")
    table = limits_table(cells)
    assert "| minimal thread hop | INVALID |  |  |" in table
    assert "| bridge, defaults | **17,200** | 0.43x |  |" in table
    assert "- minimal thread hop: 3 non-2xx" in table
    assert summary(cells).startswith("Some contenders failed")


def test_the_thread_table_compares_adaptive_with_the_best_fixed_count() -> None:
    row = "Django ORM view (CPU-bound)"
    cells = [
        Cell(row, "adaptive", "req/s", value=630.0),
        Cell(row, "fixed 2", "req/s", value=669.0),
        Cell(row, "fixed 32", "req/s", value=443.0),
        Cell(row, "fixed 8", "req/s", valid=False, notes=["failed: x"]),
    ]
    table = threads_table(cells)
    assert "| **630** | 669 (fixed 2) | 0.94x | 2: 669, 32: 443, 8: INVALID |" in table
    assert "fixed 8: failed: x" in table


def test_cpu_per_request_in_process_prints_every_contender(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import cpu

    assert cpu.main(["--rounds", "1", "--requests", "64", "--concurrency", "8"]) == 0
    table = capsys.readouterr().out.splitlines()
    names = [line.split("|")[1].strip() for line in table[3:]]
    assert names == [
        "bridge",
        "bridge, metrics=False",
        "bridge, every layer unused",
        "minimal thread hop",
        "pure ASGI (the harness alone)",
    ]
    assert all(float(line.split("|")[2]) > 0 for line in table[3:])


def test_idle_memory_in_process_counts_what_bridge_adds_to_a_connection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import idle_memory

    assert idle_memory.main(["--connections", "50", "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = out[2 : out.index("")]
    over = {
        (cells[1], cells[2]): float(cells[4])
        for cells in ([c.strip() for c in line.split("|")] for line in table)
    }
    by_hand = "the same generator by hand, one listener"
    assert list(over) == [
        *[("sse", name) for name in ("bridge", "bridge, metrics=False")],
        *[("sse", name) for name in ("Starlette StreamingResponse", by_hand, "plain ASGI")],
        *[("ws", name) for name in ("bridge", "bridge, metrics=False", "plain ASGI")],
    ]
    assert over[("sse", "plain ASGI")] == over[("ws", "plain ASGI")] == 0
    # The view's own generator and one listener are the least any framework keeps.
    assert 0 < over[("sse", by_hand)] < over[("sse", "bridge")]
    assert over[("ws", "bridge")] > 0
    assert "sse, bridge: the 3 largest allocation sites" in out
