"""Metrics for the whole server when it runs several worker processes.

Each worker keeps its own ``Metrics`` (cheap, in memory). When
``$PROMETHEUS_MULTIPROC_DIR`` is set (``bridge serve --workers N`` and the gunicorn worker
set it to a fresh directory), each worker also adds its counts to prometheus-client's
multiprocess files there; whichever worker answers ``/_bridge/metrics`` or the dashboard
then reads all the files, so both show the whole server. This is prometheus-client's
own multiprocess mode (the way gunicorn users aggregate workers): counters and
histograms are summed over every worker that ever ran, gauges over the live ones
(``livesum``; the loop lag is the worst live worker's, ``livemax``). Features that
count for themselves (the shadow runs) hand their series over as ``Count`` values.

Recycled workers leave files behind. Before each read, the reader folds the counter and
histogram files of dead workers into one archive per type (``counter_archive.db``,
``histogram_archive.db``, written with prometheus-client's own merge and mmap file),
as prometheus-client's docs advise; their live gauges are dropped. So the directory
holds four files per live worker plus two, and a scrape costs the same after a
thousand recycles as after none. Folding holds an exclusive ``flock`` on
``archive.lock`` and reading a shared one, so no read sees a dead worker twice or not
at all.

Reading happens in a thread, never on the event loop: ``refresh()`` runs one read at a
time and keeps the result, which ``merged()`` and ``render()`` then return.

What it costs: nothing per request. prometheus-client writing each observation
costs about ten times bridge's own in-memory counting, so each worker adds what it
counted to the files four times a second, from the loop-lag probe, and once more
before it answers a scrape itself; the other workers' numbers are at most that
quarter of a second old. What it gives up: the dashboard's percentiles come from the
Prometheus buckets (1, 2.5, 5 per decade), not the finer in-memory ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .prometheus import _HELP
from .values import BOUNDS, EXPORTED_BOUNDS, MIGRATED_KINDS, Count, Histogram

if TYPE_CHECKING:
    from ..threads.pool import ThreadPool
    from .values import RouteStats

logger = logging.getLogger("bridge")

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
GAUGES = ("bridge_pool_size", "bridge_pool_threads", "bridge_pool_busy", "bridge_pool_queue_depth")
LAG = "bridge_event_loop_lag_seconds"
# The file types a worker leaves behind with counts that must keep counting.
FOLDED = ("counter", "histogram")
ARCHIVE = "archive"
LOCK_FILE = "archive.lock"


class Shared:
    """One worker's side of the multiprocess files: it writes its counts, reads everyone's.

    The loop writes (``sync``, ``sample``) and starts reads; a thread does the reading
    and replaces ``_latest`` whole, so the loop only ever sees a finished result.
    """

    def __init__(self, directory: str) -> None:
        from prometheus_client import Counter, Histogram

        self.directory = directory
        labels = ("route", "kind")
        help_of = {name: text for name, (_, text) in _HELP.items()}
        self.requests = Counter(
            "bridge_requests", help_of["bridge_requests_total"], labels, registry=None
        )
        self.errors = Counter(
            "bridge_errors", help_of["bridge_errors_total"], labels, registry=None
        )
        self.blocks = Counter(
            "bridge_loop_blocks", help_of["bridge_loop_blocks_total"], labels, registry=None
        )
        self.latency = Histogram(
            "bridge_request_duration_seconds",
            help_of["bridge_request_duration_seconds"],
            labels,
            buckets=EXPORTED_BOUNDS,
            registry=None,
        )
        self.wait = Histogram(
            "bridge_thread_wait_seconds",
            help_of["bridge_thread_wait_seconds"],
            labels,
            buckets=EXPORTED_BOUNDS,
            registry=None,
        )
        # Made at the first sample, in the worker: a process that only builds the app
        # (a supervisor, gunicorn's arbiter with --preload) must not count as a live one.
        self._gauges: dict[str, Any] | None = None
        self._lag: Any = None
        self._families: dict[str, Any] = {}  # a feature's own series, by name
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._counted: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._latest: tuple[dict[str, Any], str] | None = None
        self._reading: asyncio.Future[None] | None = None
        self._forget_dead_workers()

    @classmethod
    def from_env(cls) -> Shared | None:
        """The shared side if ``$PROMETHEUS_MULTIPROC_DIR`` is set and usable, else None."""
        directory = os.environ.get(DIRECTORY_VARIABLE)
        if not directory:
            return None
        try:
            from prometheus_client import values
        except ImportError:
            logger.warning(
                "%s is set, but prometheus-client is not installed, so each worker's "
                "/_bridge/metrics shows that worker only; pip install 'bridge[metrics]'.",
                DIRECTORY_VARIABLE,
            )
            return None
        if values.ValueClass is values.MutexValue:
            logger.warning(
                "prometheus-client was imported before %s was set, so it counts this "
                "worker only; set the variable before the process starts.",
                DIRECTORY_VARIABLE,
            )
            return None
        return cls(directory)

    def _forget_dead_workers(self) -> None:
        """Drop the live gauges of workers that exited (their counters still count)."""
        from prometheus_client import multiprocess

        for pid in _pids(self.directory, "gauge_live"):
            if not _alive(pid):
                # Another worker may be removing the same files this instant.
                with contextlib.suppress(FileNotFoundError):
                    multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    # -- writing, from the probe ----------------------------------------------------

    def sync(self, all_stats: Iterable[RouteStats], counts: Iterable[Count] = ()) -> None:
        """Add what each route counted since the last call to this worker's files.

        The probe calls this four times a second, and a worker about to answer a
        scrape calls it first, so the request path pays nothing for the sharing.
        ``counts`` are the series features keep for themselves (the shadow runs').
        """
        for stats in all_stats:
            key = (stats.route, stats.kind)
            sent = self._sent.get(key)
            if sent is None:
                sent = self._sent[key] = _Sent()
            if stats.requests != sent.requests:
                self.requests.labels(*key).inc(stats.requests - sent.requests)
                sent.requests = stats.requests
            if stats.errors != sent.errors:
                self.errors.labels(*key).inc(stats.errors - sent.errors)
                sent.errors = stats.errors
            if stats.blocks != sent.blocks:
                self.blocks.labels(*key).inc(stats.blocks - sent.blocks)
                sent.blocks = stats.blocks
            if stats.latency.count != sent.latency.count:
                _add(self.latency.labels(*key), stats.latency, sent.latency)
            if stats.wait.count != sent.wait.count:
                _add(self.wait.labels(*key), stats.wait, sent.wait)
        for count in counts:
            self._write(count)

    def _write(self, count: Count) -> None:
        key = (count.name, count.labels)
        before = self._counted.get(key)
        if before == count.value:
            return
        family = self._families.get(count.name)
        if family is None:
            family = self._families[count.name] = _family(count)
        child = family.labels(*(value for _, value in count.labels))
        if count.kind == "counter":
            child.inc(count.value - (before or 0))
        else:
            child.set(count.value)
        self._counted[key] = count.value

    def sample(self, pool: ThreadPool | None, lag: float) -> None:
        """Publish this worker's gauges (the probe calls this four times a second)."""
        if self._gauges is None:
            from prometheus_client import Gauge

            help_of = {name: text for name, (_, text) in _HELP.items()}
            self._gauges = {
                name: Gauge(name, help_of[name], registry=None, multiprocess_mode="livesum")
                for name in GAUGES
            }
            self._lag = Gauge(LAG, help_of[LAG], registry=None, multiprocess_mode="livemax")
        values = (
            (pool.max_threads, len(pool.threads), pool.busy, pool.waiting) if pool else (0,) * 4
        )
        for gauge, value in zip(self._gauges.values(), values, strict=True):
            gauge.set(value)
        self._lag.set(lag)

    # -- reading: every worker's files, in a thread ------------------------------------

    async def refresh(self) -> None:
        """Fold dead workers' files and read every worker's, in a thread; one read at a time."""
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(asyncio.to_thread(self.read))
        try:
            await asyncio.shield(reading)
        except Exception as exc:  # the last good read stands; the next one may succeed
            logger.warning("Reading the metrics files in %s failed: %r", self.directory, exc)

    def read(self) -> None:
        """Fold, then read the whole server once (blocking: call it from a thread)."""
        self.fold()
        with self._locked(fcntl.LOCK_SH):
            families = list(_collect(self.directory))
            workers = self._live_workers()
        self._latest = (_merge(families, workers), _render(families))

    def _current(self) -> tuple[dict[str, Any], str]:
        latest = self._latest
        if latest is None:  # never refreshed (a direct call, a test): read now, once
            self.read()
            latest = self._latest
            assert latest is not None
        return latest

    def merged(self) -> dict[str, Any]:
        """Every worker's counts summed, as of the latest ``refresh()``."""
        return self._current()[0]

    def render(self) -> str:
        """The whole server in the Prometheus text format, as of the latest ``refresh()``."""
        return self._current()[1]

    def fold(self) -> int:
        """Fold the counter and histogram files of dead workers into the archive.

        Returns how many files it folded. Blocking: call it from a thread.
        """
        from prometheus_client.mmap_dict import MmapedDict, mmap_key
        from prometheus_client.multiprocess import MultiProcessCollector

        self._forget_dead_workers()
        if not any(not _alive(pid) for typ in FOLDED for pid in _pids(self.directory, typ)):
            return 0
        folded = 0
        with self._locked(fcntl.LOCK_EX):
            for typ in FOLDED:
                # Listed again under the lock: another worker may have just folded them.
                dead = [
                    os.path.join(self.directory, f"{typ}_{pid}.db")
                    for pid in _pids(self.directory, typ)
                    if not _alive(pid)
                ]
                if not dead:
                    continue
                archive = os.path.join(self.directory, f"{typ}_{ARCHIVE}.db")
                sources = [archive, *dead] if os.path.exists(archive) else dead
                # accumulate=False: the buckets stay per bucket, as a worker writes them.
                merged = MultiProcessCollector.merge(sources, accumulate=False)  # type: ignore[no-untyped-call]
                # Not "*.db" until renamed, so no reader ever globs a half-written archive.
                partial = archive + ".new"
                with contextlib.suppress(FileNotFoundError):
                    os.remove(partial)
                out = MmapedDict(partial)  # type: ignore[no-untyped-call]
                try:
                    for metric in merged:
                        for sample in metric.samples:
                            names = list(sample.labels)
                            key = mmap_key(
                                metric.name,
                                sample.name,
                                names,
                                [sample.labels[n] for n in names],
                                metric.documentation,
                            )
                            out.write_value(key, sample.value, 0.0)  # type: ignore[no-untyped-call]
                finally:
                    out.close()  # type: ignore[no-untyped-call]
                os.replace(partial, archive)
                for path in dead:
                    os.remove(path)
                folded += len(dead)
        return folded

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        with open(os.path.join(self.directory, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, operation)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_workers(self) -> int:
        """Workers alive now: each one that has published its gauges."""
        return sum(1 for pid in _pids(self.directory, "gauge_livesum") if _alive(pid))


def _family(count: Count) -> Any:
    """The prometheus-client metric that carries a feature's series ``count.name``."""
    from prometheus_client import Counter, Gauge

    names = [name for name, _ in count.labels]
    if count.kind == "counter":
        return Counter(count.name.removesuffix("_total"), count.help, names, registry=None)
    return Gauge(count.name, count.help, names, registry=None, multiprocess_mode="liveall")


def _collect(directory: str) -> Iterable[Any]:
    """Every worker's files and the archive, merged by prometheus-client.

    A file a worker is creating this instant is still empty (prometheus-client opens it,
    then sizes it): it holds nothing yet, and reading it would fail, so it is left out.
    """
    from prometheus_client.multiprocess import MultiProcessCollector

    files = []
    for name in _listdir(directory):
        path = os.path.join(directory, name)
        if name.endswith(".db") and _size(path) >= _HEADER_BYTES:
            files.append(path)
    collected: Iterable[Any] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
    return collected


# prometheus-client's file header: the bytes used, and padding.
_HEADER_BYTES = 8


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class _Collected:
    """Families already read, in the shape ``generate_latest`` asks a registry for."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def _render(families: list[Any]) -> str:
    from prometheus_client import generate_latest

    text: str = generate_latest(_Collected(families)).decode("utf-8")
    return text


def _merge(families: list[Any], workers: int) -> dict[str, Any]:
    """Every worker's counts summed: per ``(route, kind)``, the gauges and features' counts."""
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    gauges: dict[str, float] = {}
    counts: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def entry(labels: dict[str, str]) -> dict[str, Any]:
        key = (labels["route"], labels["kind"])
        found = routes.get(key)
        if found is None:
            found = routes[key] = {
                "requests": 0, "errors": 0, "blocks": 0,
                "latency": {}, "latency_sum": 0.0, "wait": {}, "wait_count": 0,
            }  # fmt: skip
        return found

    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in GAUGES or name == LAG:
                gauges[name] = value
            elif name == "bridge_requests_total":
                entry(labels)["requests"] += int(value)
            elif name == "bridge_errors_total":
                entry(labels)["errors"] += int(value)
            elif name == "bridge_loop_blocks_total":
                entry(labels)["blocks"] += int(value)
            elif name == "bridge_request_duration_seconds_bucket":
                entry(labels)["latency"][float(labels["le"])] = value
            elif name == "bridge_request_duration_seconds_sum":
                entry(labels)["latency_sum"] += value
            elif name == "bridge_thread_wait_seconds_bucket":
                entry(labels)["wait"][float(labels["le"])] = value
            elif name == "bridge_thread_wait_seconds_count":
                entry(labels)["wait_count"] += int(value)
            elif not name.startswith(("bridge_request_duration", "bridge_thread_wait")):
                series = counts.setdefault(name, {})
                key = tuple(sorted(labels.items()))
                series[key] = series.get(key, 0.0) + value
    return {"routes": routes, "gauges": gauges, "counts": counts, "workers": workers}


class _Sent:
    """What one route's counts were when last written to the files."""

    __slots__ = ("blocks", "errors", "latency", "requests", "wait")

    def __init__(self) -> None:
        self.requests = self.errors = self.blocks = 0
        self.latency = Histogram()
        self.wait = Histogram()


def _exported_index() -> list[int]:
    """For each fine bucket of ``metrics.BOUNDS`` (and +Inf), its Prometheus bucket."""
    from bisect import bisect_left

    return [bisect_left(EXPORTED_BOUNDS, bound) for bound in BOUNDS] + [len(EXPORTED_BOUNDS)]


def _add(child: Any, histogram: Histogram, sent: Histogram) -> None:
    """Add ``histogram - sent`` to a prometheus-client histogram child; then sent = histogram.

    The child's ``_buckets`` and ``_sum`` are its values (one per bucket, not
    cumulative), the ones its own ``observe()`` increments.
    """
    if not _EXPORTED_INDEX:
        _EXPORTED_INDEX.extend(_exported_index())
    index = _EXPORTED_INDEX
    buckets = child._buckets
    for fine, (now, before) in enumerate(zip(histogram.counts, sent.counts, strict=True)):
        if now != before:
            buckets[index[fine]].inc(now - before)
    child._sum.inc(histogram.sum - sent.sum)
    sent.counts = list(histogram.counts)
    sent.count = histogram.count
    sent.sum = histogram.sum


_EXPORTED_INDEX: list[int] = []


def percentile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q``-quantile interpolated in cumulative Prometheus buckets ``{le: count}``."""
    ordered = sorted(buckets.items())
    if not ordered or not ordered[-1][1]:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > below:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * max(rank - below, 0) / (count - below)
        lower, below = bound, count
    return lower


def _pids(directory: str, prefix: str) -> set[int]:
    """The pids in the names of ``{prefix}_<pid>.db`` files (``gauge_live`` takes every mode)."""
    found: set[int] = set()
    for name in _listdir(directory):
        if name.startswith(prefix) and name.endswith(".db"):
            digits = name[:-3].rsplit("_", 1)[-1]
            if digits.isdigit():
                found.add(int(digits))
    return found


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def whole_server(snapshot: dict[str, Any], merged: dict[str, Any]) -> None:
    """Replace one worker's routes, totals and pool in ``snapshot`` with every worker's."""
    routes = []
    legacy = migrated = 0
    for (route, kind), counts in sorted(merged["routes"].items()):
        latency, wait = counts["latency"], counts["wait"]
        is_migrated = kind in MIGRATED_KINDS
        if is_migrated:
            migrated += counts["requests"]
        else:
            legacy += counts["requests"]
        routes.append(
            {
                "route": route,
                "kind": kind,
                "migrated": is_migrated,
                "requests": counts["requests"],
                "errors": counts["errors"],
                "blocks": counts["blocks"],
                "p50": percentile(latency, 0.5),
                "p90": percentile(latency, 0.9),
                "p99": percentile(latency, 0.99),
                "latency_sum": counts["latency_sum"],
                "waits": counts["wait_count"],
                "wait_p50": percentile(wait, 0.5),
                "wait_p99": percentile(wait, 0.99),
            }
        )
    gauges = merged["gauges"]
    snapshot["routes"] = routes
    snapshot["totals"] = {"legacy": legacy, "migrated": migrated}
    snapshot["pool"] = {
        "size": int(gauges.get("bridge_pool_size", 0)),
        "threads": int(gauges.get("bridge_pool_threads", 0)),
        "busy": int(gauges.get("bridge_pool_busy", 0)),
        "queue": int(gauges.get("bridge_pool_queue_depth", 0)),
    }
    snapshot["loop"]["lag"] = gauges.get(LAG, snapshot["loop"]["lag"])
    snapshot["workers"] = merged["workers"]
