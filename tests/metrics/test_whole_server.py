"""bridge/multiprocess.py in process: two workers' counts, written through
prometheus-client's multiprocess files, read back summed by either of them."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import values

from bridge.metrics import Metrics

Worker = Callable[[int], Metrics]


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """Makes the Metrics of a worker with a given pid, sharing one directory."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def as_worker(pid: int) -> Metrics:
        # What prometheus-client chooses at import when the variable is set, with
        # this worker's pid in its file names.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
        return Metrics()

    yield as_worker


def count(metrics: Metrics, route: str, kind: str, seconds: list[float], errors: int = 0) -> None:
    stats = metrics.stats(route, kind)
    for value in seconds:
        stats.requests += 1
        stats.latency.observe(value)
    stats.errors += errors


def test_either_worker_shows_both_workers_counts(worker: Worker) -> None:
    first = worker(os.getpid())
    assert first.shared is not None
    count(first, "/items", "legacy", [0.001, 0.002, 0.004], errors=1)
    count(first, "/api/items/<int:item_id>", "async", [0.0005])
    first.shared.sync(list(first._stats.values()))

    second = worker(os.getppid())  # another live pid (our parent): its own files
    assert second.shared is not None
    count(second, "/items", "legacy", [0.003, 0.2])
    second.shared.sync(list(second._stats.values()))
    # More after the first sync: only the difference is added.
    count(first, "/items", "legacy", [0.001])

    for reader in (first, second):
        text = reader.prometheus()
        assert 'bridge_requests_total{kind="legacy",route="/items"} 6.0' in text
        assert 'bridge_errors_total{kind="legacy",route="/items"} 1.0' in text
        assert 'bridge_request_duration_seconds_count{kind="legacy",route="/items"} 6.0' in text
        assert 'duration_seconds_bucket{kind="legacy",le="0.25",route="/items"} 6.0' in text
        assert 'duration_seconds_bucket{kind="legacy",le="0.0025",route="/items"} 3.0' in text
        assert 'bridge_requests_total{kind="async",route="/api/items/<int:item_id>"} 1.0' in text
        snapshot = reader.snapshot()
        assert snapshot["totals"] == {"legacy": 6, "migrated": 1}
        assert snapshot["workers"] == 2
        routes = {(r["route"], r["kind"]): r for r in snapshot["routes"]}
        items = routes[("/items", "legacy")]
        assert (items["requests"], items["errors"]) == (6, 1)
        assert 0.001 <= items["p50"] <= 0.005
        assert items["latency_sum"] == pytest.approx(0.211)


def test_gauges_sum_over_workers_and_lag_is_the_worst(worker: Worker) -> None:
    first, second = worker(os.getpid()), worker(os.getppid())
    assert first.shared is not None and second.shared is not None
    first.shared.sample(None, 0.01)
    second.shared.sample(None, 0.3)
    text = first.prometheus()
    assert "bridge_event_loop_lag_seconds 0.3" in text
    assert "bridge_pool_size 0.0" in text


def test_without_the_variable_or_before_it_nothing_is_shared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert Metrics().shared is None
    # prometheus-client imported before the variable was set counts in process only.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    assert Metrics().shared is None


def test_percentile_handles_an_empty_and_an_overflowing_histogram() -> None:
    from bridge.metrics.whole_server import percentile

    assert percentile({}, 0.5) is None
    assert percentile({1.0: 0.0, math.inf: 3.0}, 0.99) == 1.0
