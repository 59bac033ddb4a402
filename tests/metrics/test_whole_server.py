"""bridge/multiprocess.py in process: two workers' counts, written through
prometheus-client's multiprocess files, read back summed by either of them."""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import values

from bridge import Bridge
from bridge.metrics import Metrics
from bridge.metrics.whole_server import LOCK_FILE
from bridge.shadow.compare import Captured

Worker = Callable[[int], Metrics]


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """Makes the Metrics of a worker with a given pid, sharing one directory."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def as_worker(pid: int) -> Metrics:
        # What prometheus-client chooses at import when the variable is set, with
        # this worker's pid in its file names.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
        metrics = Metrics()
        if metrics.shared is not None:  # the probe's first beat: the worker counts as live
            metrics.shared.sample(None, 0.0)
        return metrics

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
        asyncio.run(reader.refresh())
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
    asyncio.run(first.refresh())
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


def dead_pid() -> int:
    """The pid of a process that has exited: a recycled worker's."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


RECYCLES = 40


def test_dead_workers_fold_into_one_archive_and_keep_counting(
    worker: Worker, tmp_path: Path
) -> None:
    for _ in range(RECYCLES):
        retired = worker(dead_pid())
        assert retired.shared is not None
        count(retired, "/items", "legacy", [0.001, 0.3], errors=1)
        retired.shared.sample(None, 0.0)
        retired.shared.sync(list(retired._stats.values()))
    reader = worker(os.getpid())
    count(reader, "/items", "legacy", [0.002])
    asyncio.run(reader.refresh())
    # Two archives and the live worker's four files: nothing of a dead worker's is
    # left, no file per recycle.
    pid = os.getpid()
    names = {p.name for p in tmp_path.glob("*.db")}
    live = {f"counter_{pid}.db", f"histogram_{pid}.db", f"gauge_livesum_{pid}.db",
            f"gauge_livemax_{pid}.db"}  # fmt: skip
    assert names == {"counter_archive.db", "histogram_archive.db"} | live
    text = reader.prometheus()
    total = 2 * RECYCLES + 1
    assert f'bridge_requests_total{{kind="legacy",route="/items"}} {total}.0' in text
    assert f'bridge_errors_total{{kind="legacy",route="/items"}} {RECYCLES}.0' in text
    assert f'duration_seconds_count{{kind="legacy",route="/items"}} {total}.0' in text
    fast = RECYCLES + 1  # every worker's 1 or 2 ms requests
    assert f'duration_seconds_bucket{{kind="legacy",le="0.0025",route="/items"}} {fast}.0' in text
    assert f'duration_seconds_bucket{{kind="legacy",le="+Inf",route="/items"}} {total}.0' in text
    assert reader.snapshot()["totals"] == {"legacy": total, "migrated": 0}
    # A later fold adds to the archive rather than replacing it.
    again = worker(dead_pid())
    assert again.shared is not None
    count(again, "/items", "legacy", [0.001])
    again.shared.sync(list(again._stats.values()))
    asyncio.run(reader.refresh())
    assert f'route="/items"}} {total + 1}.0' in reader.prometheus()
    assert {p.name for p in tmp_path.glob("*.db")} == names


def test_a_read_waits_for_a_fold_in_a_thread_and_the_loop_runs_on(
    worker: Worker, tmp_path: Path
) -> None:
    reader = worker(os.getpid())
    count(reader, "/items", "legacy", [0.001])

    async def scrape_while_another_worker_folds() -> int:
        ticks = 0
        with open(tmp_path / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            refreshing = asyncio.ensure_future(reader.refresh())
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert not refreshing.done()  # blocked on the lock, in its thread
            fcntl.flock(lock, fcntl.LOCK_UN)
        await refreshing
        return ticks

    assert asyncio.run(scrape_while_another_worker_folds()) == 20
    assert 'bridge_requests_total{kind="legacy",route="/items"} 1.0' in reader.prometheus()


def shadowed(metrics: Metrics, matched: int, mismatched: int) -> Bridge:
    """A Bridge with one shadow route whose runs found ``matched`` and ``mismatched``."""
    app = Bridge(lambda environ, start_response: [], metrics=metrics)

    @app.route("/items", methods=["GET"], shadow=True)
    async def items(request: object) -> None:  # pragma: no cover - never served here
        return None

    (stats,) = app.shadows.routes
    for _ in range(matched):
        stats.match()
    for _ in range(mismatched):
        request = {"method": "GET", "target": "/items"}
        stats.mismatch(request, [], Captured(200, [], b"a"), Captured(200, [], b"b"))
    stats.skip("threads")
    return app


def test_shadow_counts_are_summed_across_workers(worker: Worker) -> None:
    first_metrics, second_metrics = worker(os.getpid()), worker(os.getppid())
    shadowed(first_metrics, matched=3, mismatched=1)
    shadowed(second_metrics, matched=5, mismatched=0)
    asyncio.run(second_metrics.refresh())
    asyncio.run(first_metrics.refresh())
    text = first_metrics.prometheus()
    series = 'bridge_shadow_comparisons_total{outcome="%s",route="/items"} %s'
    assert series % ("matched", "8.0") in text
    assert series % ("mismatched", "1.0") in text
    assert series % ("skipped", "2.0") in text
    assert 'bridge_shadow_skipped_total{reason="threads",route="/items"} 2.0' in text
    # One family each: the worker's own text is not appended after the files'.
    assert text.count("# TYPE bridge_shadow_comparisons_total counter") == 1
    # A streak has no sum: one series per live worker, labelled with its pid.
    assert 'bridge_shadow_match_streak{pid="' in text
    (entry,) = first_metrics.snapshot()["shadow"]
    assert (entry["matched"], entry["mismatched"], entry["skipped"]) == (8, 1, 2)
    assert entry["skips"] == {"every worker thread was busy": 2}
