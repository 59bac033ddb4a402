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
        sent = 0
        # A fresh connection each, until both workers took some (the kernel hands a
        # busy machine's connections to either worker, not in turns): 30 at least.
        while sent < 30 or (len(pids) < 2 and sent < 300):
            response = s.get("/items/1")
            assert response.status_code == 200 and response.json()["title"] == "Tea"
            pids.add(response.json()["pid"])
            sent += 1
        assert len(pids) == 2, f"{sent} requests all reached one worker"
        assert "1 route migrated, 1 shadowed (answered by the legacy app)" in s.output()
        entry: dict[str, int] = {}
        for _ in range(300):  # each worker writes its counts four times a second
            (entry,) = s.get("/_bridge/data.json").json()["shadow"]
            if entry["matched"] + entry["skipped"] == sent and entry["workers"] == 2:
                break
            time.sleep(0.1)
        # A busy machine may skip a run (a lagging loop): counted, never compared.
        assert entry["matched"] + entry["skipped"] == sent and entry["skipped"] <= sent // 6
        assert (entry["mismatched"], entry["failed"], entry["workers"]) == (0, 0, 2)
        assert (entry["streak"], entry["ready"]) == (entry["matched"], True)
