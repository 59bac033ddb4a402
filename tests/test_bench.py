"""``scripts/bench --quick`` runs every contender and writes its table (numbers are not checked)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every contender that must produce a number with the bridge of today; the bridge
# variants (routes, metrics) may be skipped until bridge has those features.
CORE = ["bridge", "a2wsgi", "asgiref", "gunicorn sync", "gunicorn gthread", "granian wsgi"]
ROW = re.compile(r"^\| (?P<workload>[^|]+) \| (?P<contender>[^|]+) \| (?P<result>[^|]*) \|")


def _rows(table: str) -> list[dict[str, str]]:
    rows = []
    for line in table.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"Not a table row: {line!r}"
        rows.append({key: value.strip().strip("*") for key, value in match.groupdict().items()})
    return rows


@pytest.mark.live
@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_quick_bench_writes_one_line_per_contender(tmp_path: Path) -> None:
    out = tmp_path / "results"
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=200)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text

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
    assert "scripts/bench --quick" in (out / "benchmarks.md").read_text()
