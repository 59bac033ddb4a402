"""Readiness across workers, live: ``bridge serve --workers 2`` and the dashboard's verdict
from both workers' counts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.serve.test_cli_live import serve

pytestmark = pytest.mark.live

APP = "tests.apps.shadow_apps:ready_after_20"


def test_two_workers_reach_ready_on_their_counts_added_up(tmp_path: Path) -> None:
    with serve(tmp_path, APP, "--workers", "2", ready_path="/health") as s:
        pids: set[int] = set()
        for _ in range(30):  # a fresh connection each: both workers take some
            response = s.get("/items/1")
            assert response.status_code == 200 and response.json()["title"] == "Tea"
            pids.add(response.json()["pid"])
        assert len(pids) == 2, "the requests reached both workers"
        assert "1 route migrated, 1 shadowed (answered by the legacy app)" in s.output()
        entry: dict[str, int] = {}
        for _ in range(300):  # each worker writes its counts four times a second
            (entry,) = s.get("/_bridge/data.json").json()["shadow"]
            if entry["matched"] + entry["skipped"] == 30 and entry["workers"] == 2:
                break
            time.sleep(0.1)
        # A busy machine may skip a run (a lagging loop): counted, never compared.
        assert entry["matched"] + entry["skipped"] == 30 and entry["skipped"] <= 5
        assert (entry["mismatched"], entry["failed"], entry["workers"]) == (0, 0, 2)
        assert (entry["streak"], entry["ready"]) == (entry["matched"], True)
