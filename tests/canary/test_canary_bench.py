"""``scripts/bench --only canary`` runs and checks every response of each arm (not the numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.canary import ROWS
from bench.groups import Cell
from tests.test_bench import bench, needs_wrk

pytestmark = pytest.mark.live


@pytest.mark.timeout(200)
@needs_wrk
def test_quick_canary_group_measures_every_arm(tmp_path: Path) -> None:
    out = tmp_path / "results"
    bench(out, "--only=canary", timeout=180)
    data = json.loads((out / "results.json").read_text())
    cells = [Cell(**cell) for cell in data["sections"]["canary"]]
    assert [c.row for c in cells] == [what for _, what, _ in ROWS]
    assert all(c.valid and c.value for c in cells), cells
    document = (out / "benchmarks.md").read_text()
    assert "<!-- bench:canary -->" in document and "| `/canary/fallback` |" in document
