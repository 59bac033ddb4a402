"""The value types of one benchmark run: what a workload asks, a contender's result, the plan.

A leaf: ``workloads`` (the loop that runs them) and ``shadow`` (the shadow workload's
own runner) both use these, and neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import apps


@dataclass(frozen=True)
class Workload:
    """What one workload requests, how it is measured, and what it is compared with."""

    name: str
    title: str
    kind: str  # "wrk", "download", "first-byte", "memory" or "shadow"
    unit: str
    higher_is_better: bool = True
    app: str = "micro"
    path: str = "/hello"
    threads: int = 32
    connections: int = 32
    expect_length: int = -1
    method: str = "GET"
    upload_bytes: int = 0
    size: int = 0
    ceiling: str = "asgi"  # "asgi", "ideal" or "" (no ceiling for this workload)
    delay_ms: int = 0  # a pause between each connection's requests: a fixed offered load
    variants: bool = False  # whether the bridge variants run it too
    warmup: int = 0  # seconds of warm-up when longer than the plan's (adaptive threads climb)

    @property
    def ideal(self) -> float:
        """Requests per second if every thread only waited: threads / latency."""
        return self.threads / apps.SLEEP_SECONDS


@dataclass
class Result:
    """One contender on one workload: the median of its runs, and what was checked."""

    workload: str
    contender: str
    unit: str
    value: float | None = None
    runs: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    baseline_mib: float | None = None
    valid: bool = True
    notes: list[str] = field(default_factory=list)
    vs_a2wsgi: float | None = None
    vs_ceiling: float | None = None


@dataclass(frozen=True)
class Plan:
    """Durations and sizes: the full run, or ``--quick`` (one short run, tiny workloads)."""

    quick: bool
    runs: int
    seconds: int
    warmup_seconds: int

    @classmethod
    def make(cls, quick: bool, runs: int, seconds: int) -> Plan:
        if quick:
            return cls(quick=True, runs=1, seconds=1, warmup_seconds=0)
        return cls(quick=False, runs=max(runs, 1), seconds=seconds, warmup_seconds=1)
