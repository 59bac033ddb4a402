"""Readiness across workers: "ready to switch" decided from every worker's counts, through
the whole-server files (two workers in process, each with its own pid's files)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values

from bridge import Bridge
from bridge.metrics import Metrics
from bridge.shadow import Shadow
from bridge.shadow.compare import Captured
from bridge.shadow.stats import ShadowStats

Worker = Callable[[int], tuple[Metrics, ShadowStats]]
REQUEST = {"method": "GET", "target": "/items"}


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """A worker with a given pid: its Metrics (sharing one directory) and the stats of a
    shadow route ``/items`` that needs ten matches in a row. Its files are made at once,
    while prometheus-client writes under its pid."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def as_worker(pid: int) -> tuple[Metrics, ShadowStats]:
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
        metrics = Metrics()
        assert metrics.shared is not None
        metrics.shared.sample(None, 0.0)  # the probe's first beat: a live worker
        app = Bridge(lambda environ, start_response: [], metrics=metrics)
        app.route("/items", methods=["GET"], shadow=Shadow(ready_after=10))(_never)
        refresh(metrics)
        (stats,) = app.shadows.routes
        return metrics, stats

    yield as_worker


async def _never(request: Any) -> None:  # pragma: no cover - never served here
    return None


def refresh(metrics: Metrics) -> None:
    """What the probe does at each history point: write, read every worker's, hear."""
    asyncio.run(metrics.refresh())


def write(metrics: Metrics) -> None:
    """What the probe does four times a second: write this worker's counts, read nothing."""
    assert metrics.shared is not None
    metrics.shared.sync(metrics.all_stats(), metrics._counts())


def shown(metrics: Metrics) -> dict[str, Any]:
    """The dashboard's entry as this worker answers it (it refreshes first)."""
    refresh(metrics)
    (entry,) = metrics.snapshot()["shadow"]
    return {k: entry[k] for k in ("matched", "mismatched", "streak", "workers", "ready")}


def matches(stats: ShadowStats, n: int) -> None:
    for _ in range(n):
        stats.match()


def mismatch(stats: ShadowStats) -> None:
    stats.mismatch(REQUEST, [], Captured(200, [], b"a"), Captured(200, [], b"b"))


def test_two_workers_are_ready_together_when_neither_is_alone(worker: Worker) -> None:
    first, a = worker(os.getpid())
    second, b = worker(os.getppid())  # another live pid (our parent)
    matches(a, 6)
    matches(b, 6)
    write(first)
    write(second)
    assert not a.ready and not b.ready, "six in a row each: neither worker is ready alone"
    whole = {"matched": 12, "mismatched": 0, "streak": 12, "workers": 2, "ready": True}
    assert shown(first) == shown(second) == whole


def test_a_mismatch_in_one_worker_ends_the_streak_of_every_worker(worker: Worker) -> None:
    first, a = worker(os.getpid())
    second, b = worker(os.getppid())
    matches(a, 12)
    matches(b, 3)
    mismatch(b)
    write(first)
    # The first worker has not read the files since: its twelve still stand in its own
    # count, but the server is not ready while a live worker has not heard of a mismatch.
    assert shown(second) == {
        "matched": 15, "mismatched": 1, "streak": 12, "workers": 2, "ready": False,
    }  # fmt: skip
    assert a.streak == 12
    refresh(first)  # it reads the files: its streak ends with the other's mismatch
    assert a.streak == 0
    assert shown(second)["streak"] == 0 and not shown(second)["ready"]
    matches(a, 5)
    matches(b, 5)
    write(second)
    assert shown(first) == {
        "matched": 25, "mismatched": 1, "streak": 10, "workers": 2, "ready": True,
    }  # fmt: skip
    # Its own later mismatches are no news to a worker: hearing them again resets nothing.
    refresh(first)
    assert a.streak == 5
