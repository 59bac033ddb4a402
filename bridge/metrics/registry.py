"""Counters for a migration under way: per-route traffic, latency, thread waits, loop health.

Everything here is cheap enough to leave on. A request costs two ``perf_counter()``
calls, a dict lookup and two histogram updates (a ``bisect`` over a fixed list of
bucket bounds). Gauges (pool, loop lag) are read when asked for, or sampled by one
background task that sleeps ``LAG_INTERVAL`` seconds and measures how late it wakes
up: the event-loop lag.

Memory is bounded whatever the paths clients send: one fixed histogram per label, a
ring buffer of ``history_length`` points, and for the legacy app

* at most ``max_groups`` labels of their own; every other group counts as ``other``.
  The first half go to the first groups seen (an application's own routes, which is
  what a small app or a test sees). The other half are *earned*: a group is counted
  in a Misra-Gries summary of ``4 * max_groups`` candidates, and gets a label once
  its count there reaches ``label_after``. When the summary is full, a newcomer
  takes one from every candidate instead of a place, and candidates at zero leave;
  the count of a group is never more than its requests, and a group with more than
  one request in ``4 * max_groups + 1`` stays in. So a flood of distinct paths takes
  at most the first half of the labels, and a route that is busy during the flood
  still earns one. Labels are never taken back (a Prometheus series keeps its name);
  an attacker who repeats each of many paths ``label_after`` times can still use up
  the earned half, which a ``legacy_group`` that knows the URL scheme prevents.
* groups longer than ``MAX_LABEL_LENGTH`` characters never get a label;
* a cache from path to labelled group of at most ``PATH_CACHE_BYTES`` (counted as the
  path's length plus ``_PATH_ENTRY_BYTES`` for the string and dict slot), emptied
  when full; paths longer than ``_MAX_CACHED_PATH`` are not cached.

Together they hold well under 1 MiB (tests/metrics/test_registry_memory.py measures it with
tracemalloc over 11,000 distinct paths and 60 KiB segments).

Async views and mounted apps are driven one step (one ``send()`` into the
coroutine) at a time; a step that holds the loop longer than ``block_threshold``
is a block, counted and logged with the route's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..wsgi.cycle import Outcome
from .measured import Measured, Stepped
from .values import BOUNDS, Count, RouteStats
from .whole_server import Shared, whole_server

if TYPE_CHECKING:
    from ..threads.pool import ThreadPool

logger = logging.getLogger("bridge")

# A step that holds the loop this long stalls every connection noticeably; asyncio's
# own debug mode warns at 100 ms (loop.slow_callback_duration).
DEFAULT_BLOCK_THRESHOLD = 0.1
# One warning per route per minute says what is wrong without flooding the log.
DEFAULT_BLOCK_LOG_INTERVAL = 60.0
# Legacy groups beyond this share the "other" group, so a path segment that is an id
# cannot grow memory or the Prometheus label set without bound.
DEFAULT_MAX_GROUPS = 100
OTHER_GROUP = "other"
# Requests a group must be counted (among the candidates) to earn one of the second
# half of the labels: a few seconds of a route that matters, more than an attacker's
# one-off paths.
DEFAULT_LABEL_AFTER = 20
# Candidates for an earned label, per label: more keeps routes with a smaller share.
_CANDIDATES_PER_LABEL = 4
# Prometheus accepts any length, but a label this long is an attack, not a route.
MAX_LABEL_LENGTH = 256
# The lag probe wakes four times a second: often enough to see a stall, rarely
# enough to cost nothing (one timer per 250 ms).
LAG_INTERVAL = 0.25
# The dashboard's history: 120 points of 5 s, the last ten minutes.
DEFAULT_HISTORY_INTERVAL = 5.0
DEFAULT_HISTORY_LENGTH = 120


# Paths whose legacy group is remembered, in bytes; when full, the cache is emptied and
# refilled. 512 KiB holds about 4,000 paths of 80 characters.
PATH_CACHE_BYTES = 512 * 1024
_PATH_ENTRY_BYTES = 100  # a str's header (49 bytes) and a dict slot, rounded up
_MAX_CACHED_PATH = 1024

_clock = time.perf_counter


def first_segment(path: str) -> str:
    """The default legacy grouping: ``/items/7`` gives ``/items``, ``/`` gives ``/``."""
    end = path.find("/", 1)
    if end < 0:
        return path or "/"
    return path[:end]


class Metrics:
    """The registry of one ``Bridge``: ``Bridge(app, metrics=Metrics(...))`` to configure it.

    * ``legacy_group=first_segment``: maps a legacy request's path to its label; give a
      function that knows your URL scheme (``/users/<id>`` → ``/users``) for finer groups.
    * ``max_groups=100``: legacy groups kept apart; the rest count as ``other``. The
      first half go to the first groups seen, the rest must be earned (``label_after``).
    * ``label_after=20``: requests a legacy group must be counted (among the busiest
      candidates) to earn a label once the first half are taken; 1 gives every label
      to the first groups seen.
    * ``block_threshold=0.1``: seconds an async view or mounted app may hold the loop in
      one step before it is reported; ``None`` turns the detector off.
    * ``block_log_interval=60``: seconds between two warnings about the same route.
    * ``history_interval=5``, ``history_length=120``: the dashboard's time series.
    """

    def __init__(
        self,
        *,
        legacy_group: Callable[[str], str] = first_segment,
        max_groups: int = DEFAULT_MAX_GROUPS,
        label_after: int = DEFAULT_LABEL_AFTER,
        block_threshold: float | None = DEFAULT_BLOCK_THRESHOLD,
        block_log_interval: float = DEFAULT_BLOCK_LOG_INTERVAL,
        history_interval: float = DEFAULT_HISTORY_INTERVAL,
        history_length: int = DEFAULT_HISTORY_LENGTH,
    ) -> None:
        if max_groups < 1:
            raise ValueError(f"max_groups must be at least 1, not {max_groups}.")
        if label_after < 1:
            raise ValueError(f"label_after must be at least 1, not {label_after}.")
        if history_interval < LAG_INTERVAL:
            raise ValueError(
                f"history_interval must be at least {LAG_INTERVAL} s, not {history_interval}."
            )
        self.legacy_group = legacy_group
        self.max_groups = max_groups
        self.label_after = label_after
        self._open_labels = max_groups - max_groups // 2
        self._candidate_slots = _CANDIDATES_PER_LABEL * max_groups
        self._candidates: dict[str, int] = {}  # group -> its Misra-Gries count
        self.block_threshold = block_threshold
        self.block_log_interval = block_log_interval
        self.history_interval = history_interval
        self.history: deque[dict[str, Any]] = deque(maxlen=history_length)
        self.pool: ThreadPool | None = None
        self.loop_lag = 0.0  # the latest probe's overshoot, seconds
        self._interval_lag = 0.0  # the worst probe since the last history point
        self._interval_busy = 0
        self._interval_queue = 0
        self._stats: dict[tuple[str, str], RouteStats] = {}
        self._legacy: dict[str, RouteStats] = {}  # labelled group -> its stats
        self._paths: dict[str, RouteStats] = {}  # request path -> its labelled group's stats
        self._path_bytes = 0
        self._by_route: dict[int, RouteStats] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self._probe: asyncio.Task[None] | None = None
        self._last_totals = (0, 0)
        self._sources: dict[str, Source] = {}
        self.started = time.time()
        # With $PROMETHEUS_MULTIPROC_DIR (bridge serve --workers N), every count is also
        # written where all workers' counts are summed: see whole_server.py.
        self.shared = Shared.from_env()

    def bind(self, pool: ThreadPool) -> None:
        """Attach to the ``Bridge``'s pool: read its gauges, and time its waits."""
        if self.pool is not None and self.pool is not pool:
            raise ValueError(
                "This Metrics object already belongs to another Bridge; give each Bridge its own."
            )
        self.pool = pool

    def attach(self, key: str, source: Source) -> None:
        """Show ``source`` too: its snapshot under ``key`` of the dashboard's data, and its
        lines after the others in the Prometheus text (the shadow routes' counters)."""
        self._sources[key] = source

    # -- the stats of each kind of request -------------------------------------------

    def stats(self, label: str, kind: str) -> RouteStats:
        """The counters for ``label`` of ``kind``, made on first use."""
        key = (label, kind)
        found = self._stats.get(key)
        if found is None:
            found = self._stats[key] = RouteStats(label, kind)
        return found

    def legacy_stats(self, path: str) -> RouteStats:
        """The counters for the legacy group of ``path``: its own, or ``other``."""
        group = self.legacy_group(path)
        found = self._legacy.get(group)
        if found is not None:
            return found
        labelled = len(self._legacy)
        if labelled >= self.max_groups or len(group) > MAX_LABEL_LENGTH:
            return self.stats(OTHER_GROUP, "legacy")
        if labelled >= self._open_labels:
            counts = self._candidates
            count = counts.pop(group, 0) + 1
            if count < self.label_after:
                if count > 1 or len(counts) < self._candidate_slots:
                    counts[group] = count
                else:  # full: the newcomer takes one from every candidate
                    self._candidates = {g: c - 1 for g, c in counts.items() if c > 1}
                return self.stats(OTHER_GROUP, "legacy")
        found = self._legacy[group] = self.stats(group, "legacy")
        if len(self._legacy) == self.max_groups:
            self._candidates = {}  # no label left to earn
        return found

    def route_stats(self, route: Route) -> RouteStats:
        found = self._by_route.get(id(route))
        if found is None:
            kind = "async" if route.is_async else "sync"
            found = self._by_route[id(route)] = self.stats(route.rule, kind)
        return found

    def legacy_for(self, path: str) -> RouteStats:
        """The counters for a legacy request to ``path`` (``RequestPath.route``).

        The labelled group of each path is remembered (in a cache bounded in bytes),
        since this is the hot path of a migration. A path counted as ``other`` is not:
        its group may earn a label later.
        """
        stats = self._paths.get(path)
        if stats is None:
            stats = self.legacy_stats(path)
            if stats.route != OTHER_GROUP and len(path) <= _MAX_CACHED_PATH:
                cost = len(path) + _PATH_ENTRY_BYTES
                if self._path_bytes + cost > PATH_CACHE_BYTES:
                    self._paths.clear()
                    self._path_bytes = 0
                self._paths[path] = stats
                self._path_bytes += cost
        return stats

    # -- measuring (on the loop, per request) -----------------------------------------

    def measure(
        self,
        stats: RouteStats,
        serving: Coroutine[Any, Any, Outcome],
        on_loop: bool = False,
        long_lived: bool = False,
    ) -> Awaitable[object]:
        """``serving``, to be awaited, counting its outcome under ``stats``: the one way in.

        ``on_loop``: ``serving`` runs application code on the event loop (an async view,
        a mounted app), so each of its steps is timed for the block detector.
        ``long_lived``: the connection may stay open for hours (a websocket), so it is
        measured by a slotted object rather than a suspended frame (``measured.py``).
        """
        probe = self._probe
        if probe is None or probe.done():
            self.start()
        # Each counts as the coroutine below does.
        if on_loop and self.block_threshold is not None:
            return Stepped(serving, self, stats)
        if on_loop or long_lived:
            return Measured(serving, stats)
        return self._measure(stats, serving)

    async def _measure(self, stats: RouteStats, serving: Coroutine[Any, Any, Outcome]) -> None:
        # The request's whole cost here: one clock pair and a few increments, each
        # histogram filed by its bucket index. The pool wrote the thread wait on the
        # outcome, so nothing is set aside for it while the request runs.
        start = _clock()
        try:
            outcome = await serving
        except Exception:
            stats.errors += 1
            raise
        else:
            if outcome.status >= 500 or outcome.cut:  # Outcome.failed, without the call
                stats.errors += 1
            waited = outcome.waited
            if waited is not None:
                wait = stats.wait
                wait.counts[bisect_left(BOUNDS, waited)] += 1
                wait.count += 1
                wait.sum += waited
        finally:
            elapsed = _clock() - start
            stats.requests += 1
            latency = stats.latency
            latency.counts[bisect_left(BOUNDS, elapsed)] += 1
            latency.count += 1
            latency.sum += elapsed

    def blocked(self, stats: RouteStats, seconds: float) -> None:
        """Count a step that held the loop for ``seconds``, and warn if not warned lately."""
        stats.blocks += 1
        key = (stats.route, stats.kind)
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < self.block_log_interval:
            return
        self._logged[key] = now
        what = "mounted app" if stats.kind == "mount" else "async view"
        logger.warning(
            'The %s at "%s" blocked the event loop for %.0f ms in one step; every other '
            "request waited meanwhile. Await the slow call, or run it in a thread with "
            "asgiref.sync.sync_to_async (a plain def view runs in the pool).",
            what,
            stats.route,
            seconds * 1000,
        )

    # -- the background probe -----------------------------------------------------------

    def start(self) -> None:
        """Start the loop-lag probe on the running loop (idempotent)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    async def stop(self) -> None:
        if self.shared is not None:
            self.shared.sync(list(self._stats.values()), self._counts())
            self.shared.close()  # this worker's gauges leave the sum; its counts stay
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done():
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)

    async def _run_probe(self) -> None:
        if self.shared is not None:
            # A worker starts where one retired: fold what the dead left, off the loop.
            await self.refresh()
        clock = time.perf_counter
        next_point = clock() + self.history_interval
        while True:
            start = clock()
            await asyncio.sleep(LAG_INTERVAL)
            now = clock()
            # The loop may wake a timer up to its clock resolution early: clamp at 0.
            lag = max(now - start - LAG_INTERVAL, 0.0)
            self.loop_lag = lag
            self._interval_lag = max(self._interval_lag, lag)
            pool = self.pool
            if self.shared is not None:
                self.shared.sample(pool, lag)
                self.shared.sync(list(self._stats.values()), self._counts())
            if pool is not None:
                self._interval_busy = max(self._interval_busy, pool.busy)
                self._interval_queue = max(self._interval_queue, pool.waiting)
            if now >= next_point:
                next_point = now + self.history_interval
                await self.refresh()  # the whole server's totals, read in a thread
                self.history.append(self._point())

    def _totals(self) -> tuple[int, int]:
        if self.shared is not None:  # the whole server's, as of the latest refresh()
            merged: dict[str, Any] = {"loop": {"lag": 0.0}}
            whole_server(merged, self.shared.merged())
            return merged["totals"]["legacy"], merged["totals"]["migrated"]
        legacy = migrated = 0
        for stats in list(self._stats.values()):
            if stats.migrated:
                migrated += stats.requests
            else:
                legacy += stats.requests
        return legacy, migrated

    def _point(self) -> dict[str, Any]:
        """One history point: traffic since the last point, and the worst gauges in it."""
        legacy, migrated = self._totals()
        last_legacy, last_migrated = self._last_totals
        self._last_totals = (legacy, migrated)
        point = {
            "time": time.time(),
            "legacy": legacy - last_legacy,
            "migrated": migrated - last_migrated,
            "busy": self._interval_busy,
            "queue": self._interval_queue,
            "size": self.pool.max_threads if self.pool is not None else 0,
            "lag": self._interval_lag,
        }
        self._interval_lag = 0.0
        self._interval_busy = self._interval_queue = 0
        return point

    # -- reading --------------------------------------------------------------------

    def _counts(self) -> list[Count]:
        """The series attached sources count for themselves (the shadow runs')."""
        found: list[Count] = []
        for source in self._sources.values():
            counts = getattr(source, "counts", None)
            if counts is not None:
                found.extend(counts())
        return found

    async def refresh(self) -> None:
        """Bring the whole server's numbers up to date, reading the files in a thread.

        Call it before ``snapshot()`` or ``prometheus()``; with one process it does nothing.
        """
        if self.shared is not None:
            self.shared.sync(list(self._stats.values()), self._counts())
            await self.shared.refresh()
            counts = self.shared.merged()["counts"]
            heard = [getattr(s, "hear", None) for s in self._sources.values()]
            for hear in filter(None, heard):  # a source that acts on every worker's counts
                hear(counts)
            if any(heard):  # what it changed (a shadow streak ended), written at once
                self.shared.sync((), self._counts())

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain dicts and lists of numbers and strings (JSON-ready)."""
        routes = []
        for stats in list(self._stats.values()):
            latency, wait = stats.latency, stats.wait
            routes.append(
                {
                    "route": stats.route,
                    "kind": stats.kind,
                    "migrated": stats.migrated,
                    "requests": stats.requests,
                    "errors": stats.errors,
                    "blocks": stats.blocks,
                    "p50": latency.percentile(0.5),
                    "p90": latency.percentile(0.9),
                    "p99": latency.percentile(0.99),
                    "latency_sum": latency.sum,
                    "waits": wait.count,
                    "wait_p50": wait.percentile(0.5),
                    "wait_p99": wait.percentile(0.99),
                }
            )
        legacy, migrated = self._totals()
        pool = self.pool
        snapshot: dict[str, Any] = {
            "time": time.time(),
            "started": self.started,
            "routes": routes,
            "totals": {"legacy": legacy, "migrated": migrated},
            "pool": {
                "size": pool.max_threads if pool is not None else 0,
                "threads": len(pool.threads) if pool is not None else 0,
                "busy": pool.busy if pool is not None else 0,
                "queue": pool.waiting if pool is not None else 0,
            },
            "loop": {"lag": self.loop_lag, "probing": bool(self._probe and not self._probe.done())},
            "history": list(self.history),
            "history_interval": self.history_interval,
            "block_threshold": self.block_threshold,
            **{key: source.snapshot() for key, source in self._sources.items()},
        }
        if self.shared is not None:
            merged = self.shared.merged()
            whole_server(snapshot, merged)
            for key, source in self._sources.items():
                summed = getattr(source, "whole_server", None)
                if summed is not None:  # a source's own counts, every worker's
                    snapshot[key] = summed(snapshot[key], merged["counts"])
        return snapshot

    def all_stats(self) -> list[RouteStats]:
        """Every route's counters, in the order the Prometheus text lists them."""
        return sorted(self._stats.values(), key=lambda s: (s.kind, s.route))

    def prometheus(self) -> str:
        """The Prometheus text exposition format, version 0.0.4."""
        if self.shared is not None:  # every worker's series, as of the latest refresh()
            # A source that hands over its counts is in the files; any other shows this worker's.
            return self.shared.render() + "".join(
                s.prometheus() for s in self._sources.values() if not hasattr(s, "counts")
            )
        attached = "".join(s.prometheus() for s in self._sources.values())
        from .prometheus import render_prometheus

        return render_prometheus(self) + attached


class Route(Protocol):
    """What the metrics read of a migrated route (``bridge.routing.Route`` has it)."""

    @property
    def rule(self) -> str: ...
    @property
    def is_async(self) -> bool: ...
    @property
    def wsgi(self) -> object: ...


class Source(Protocol):
    """Counters kept elsewhere that the dashboard and the Prometheus text show too."""

    def snapshot(self) -> Any: ...

    def prometheus(self) -> str: ...
