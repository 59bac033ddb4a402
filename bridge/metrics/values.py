"""The metrics' value types: fixed-bucket histograms and one route's counters.

A leaf: the registry, the blocking detector, the Prometheus text and the whole-server
files all import from here, never from each other's classes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..threads.pool import ThreadPool


MIGRATED_KINDS = frozenset({"async", "sync", "mount", "websocket"})


# Bucket upper bounds in seconds, 10 per decade from 10 us to 100 s (neighbours at
# most a third apart, so an interpolated percentile is off by less than that).
# Prometheus gets the 1, 2.5, 5 subset, the spacing of its default buckets.
_MANTISSAS = ("1", "1.25", "1.5", "2", "2.5", "3", "4", "5", "6", "8")


BOUNDS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-5, 2) for m in _MANTISSAS),
    100.0,
)


EXPORTED_BOUNDS: tuple[float, ...] = tuple(
    b for b in BOUNDS if f"{b:e}".split("e")[0].rstrip("0").rstrip(".") in ("1", "2.5", "5")
)


class Histogram:
    """Counts of observations in fixed buckets (``BOUNDS``), with their sum."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: bucket i holds values <= BOUNDS[i], Prometheus's "le".
        self.counts[bisect_left(BOUNDS, value)] += 1
        self.count += 1
        self.sum += value

    def percentile(self, q: float) -> float | None:
        """The ``q``-quantile (0 to 1), interpolated inside its bucket; None if empty."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                if index == len(BOUNDS):
                    return BOUNDS[-1]
                lower = BOUNDS[index - 1] if index else 0.0
                return lower + (BOUNDS[index] - lower) * max(rank - seen, 0) / count
            seen += count
        return BOUNDS[-1]

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count of values <= le)`` for each exported bound, then ``(inf, total)``."""
        out: list[tuple[float, int]] = []
        running = 0
        exported = iter(EXPORTED_BOUNDS)
        wanted = next(exported)
        for bound, count in zip(BOUNDS, self.counts[:-1], strict=True):
            running += count
            if bound == wanted:
                out.append((bound, running))
                wanted = next(exported, math.inf)
        out.append((math.inf, self.count))
        return out


class RouteStats:
    """The counters of one route, mount or legacy group."""

    __slots__ = ("blocks", "errors", "kind", "latency", "requests", "route", "wait")

    def __init__(self, route: str, kind: str) -> None:
        self.route = route
        self.kind = kind  # "async", "sync", "mount" or "legacy"
        self.requests = 0
        self.errors = 0  # 5xx answers and exceptions
        self.blocks = 0  # steps that held the event loop past the threshold
        self.latency = Histogram()
        self.wait = Histogram()  # time from handing a call to the pool to its start

    @property
    def migrated(self) -> bool:
        return self.kind in MIGRATED_KINDS

    def file(self, elapsed: float, failed: bool, waited: float | None) -> None:
        """Count one request that took ``elapsed`` seconds (``Metrics.measure`` inlines
        the same on the legacy hot path); ``waited``: its calls' wait for a thread."""
        if failed:
            self.errors += 1
        if waited is not None:
            wait = self.wait
            wait.counts[bisect_left(BOUNDS, waited)] += 1
            wait.count += 1
            wait.sum += waited
        self.requests += 1
        latency = self.latency
        latency.counts[bisect_left(BOUNDS, elapsed)] += 1
        latency.count += 1
        latency.sum += elapsed


class Recorder(Protocol):
    """What the blocking detector and the Prometheus text read of a ``Metrics``."""

    block_threshold: float | None
    loop_lag: float

    pool: ThreadPool | None

    def blocked(self, stats: RouteStats, seconds: float) -> None: ...

    def all_stats(self) -> list[RouteStats]: ...


class Count(NamedTuple):
    """One series a feature counts for itself (the shadow runs'), to be summed across workers.

    ``kind`` is "counter" (summed over every worker that ever ran) or "gauge" (shown
    per live worker, with a ``pid`` label, since a sum of streaks means nothing).
    """

    name: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float
