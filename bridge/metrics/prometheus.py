"""The Prometheus text exposition format (version 0.0.4) of a ``Metrics`` registry."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .values import Histogram, Recorder, RouteStats

# -- the Prometheus text format ---------------------------------------------------------

_HELP = {
    "bridge_requests_total": ("counter", "Requests answered, by route and kind."),
    "bridge_errors_total": ("counter", "Requests answered with a 5xx status or an exception."),
    "bridge_loop_blocks_total": (
        "counter",
        "Steps of an async view or mounted app that held the event loop past the threshold.",
    ),
    "bridge_request_duration_seconds": (
        "histogram",
        "Time from dispatch to the end of the response.",
    ),
    "bridge_thread_wait_seconds": (
        "histogram",
        "Time a call waited for a pool thread to start it.",
    ),
    "bridge_pool_size": ("gauge", "The most threads the pool may run (max_threads)."),
    "bridge_pool_threads": ("gauge", "Threads the pool has started so far."),
    "bridge_pool_busy": ("gauge", "Threads running a call now."),
    "bridge_pool_queue_depth": ("gauge", "Calls waiting for a free thread now."),
    "bridge_event_loop_lag_seconds": (
        "gauge",
        "How late the latest 250 ms probe timer fired: time the loop was busy elsewhere.",
    ),
}


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def render_prometheus(metrics: Recorder) -> str:
    """Every metric of ``metrics`` in the Prometheus text format 0.0.4."""
    lines: list[str] = []
    all_stats = metrics.all_stats()

    def header(name: str) -> None:
        kind, text = _HELP[name]
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    def labels(stats: RouteStats) -> str:
        return f'route="{escape(stats.route)}",kind="{stats.kind}"'

    for name, attribute in (
        ("bridge_requests_total", "requests"),
        ("bridge_errors_total", "errors"),
        ("bridge_loop_blocks_total", "blocks"),
    ):
        header(name)
        for stats in all_stats:
            lines.append(f"{name}{{{labels(stats)}}} {getattr(stats, attribute)}")
    for name, attribute in (
        ("bridge_request_duration_seconds", "latency"),
        ("bridge_thread_wait_seconds", "wait"),
    ):
        header(name)
        for stats in all_stats:
            histogram: Histogram = getattr(stats, attribute)
            if attribute == "wait" and not histogram.count and stats.kind in ("async", "mount"):
                continue  # never uses a thread: no series
            common = labels(stats)
            for bound, count in histogram.cumulative():
                lines.append(f'{name}_bucket{{{common},le="{_number(bound)}"}} {count}')
            lines.append(f"{name}_sum{{{common}}} {_number(histogram.sum)}")
            lines.append(f"{name}_count{{{common}}} {histogram.count}")
    pool = metrics.pool
    gauges = {
        "bridge_pool_size": pool.max_threads if pool is not None else 0,
        "bridge_pool_threads": len(pool.threads) if pool is not None else 0,
        "bridge_pool_busy": pool.busy if pool is not None else 0,
        "bridge_pool_queue_depth": pool.waiting if pool is not None else 0,
        "bridge_event_loop_lag_seconds": metrics.loop_lag,
    }
    for name, value in gauges.items():
        header(name)
        lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"
