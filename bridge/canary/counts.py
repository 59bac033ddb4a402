"""The canary counts as the dashboard and Prometheus read them: this worker's, or every worker's.

Each ``CanaryControl`` counts its arms in memory. When the server runs several workers
with a whole-server metrics directory (``$PROMETHEUS_MULTIPROC_DIR``, set by
``bridge serve --workers N``; see ``bridge.metrics.whole_server``), every answer is
also written to prometheus-client's multiprocess files there, as it is counted, so
the Prometheus text (which renders every file) and the dashboard (which sums them
here) show the whole server. Writing costs a canary route's request a few
microseconds; no other request pays anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..metrics.prometheus import escape
from ..metrics.values import EXPORTED_BOUNDS, Histogram
from ..metrics.whole_server import percentile
from .control import STATES, CanaryControl

_PREFIX = "bridge_canary"
_HELP = {
    "requests": "Requests of a canary route, by arm: the view or the legacy app.",
    "errors": "Requests of a canary route's arm answered with a 5xx or an exception.",
    "fallbacks": "Requests whose canary view failed and the legacy app answered instead.",
    "duration_seconds": "Time until a canary route's answer was whole, by arm.",
}


class Counts:
    """Where the canary counts go beyond memory: nowhere, or the whole-server ``directory``."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._files: dict[str, Any] | None = None

    def _metrics(self) -> dict[str, Any]:
        if self._files is None:
            from prometheus_client import Counter, Histogram

            labels = ("route", "arm")
            self._files = {
                name: Counter(f"{_PREFIX}_{name}", _HELP[name], labels, registry=None)
                for name in ("requests", "errors", "fallbacks")
            }
            self._files["duration_seconds"] = Histogram(
                f"{_PREFIX}_duration_seconds",
                _HELP["duration_seconds"],
                labels,
                buckets=EXPORTED_BOUNDS,
                registry=None,
            )
        return self._files

    def observe(self, rule: str, arm: str, failed: bool, seconds: float, fallback: bool) -> None:
        """Write one answer to the whole-server files (when there are any)."""
        if self.directory is None:
            return
        files = self._metrics()
        files["requests"].labels(rule, arm).inc()
        if failed:
            files["errors"].labels(rule, arm).inc()
        if fallback:
            files["fallbacks"].labels(rule, arm).inc()
        files["duration_seconds"].labels(rule, arm).observe(seconds)

    # -- reading ----------------------------------------------------------------------------

    def merged(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every worker's counts, summed per ``(rule, arm)``."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self._metrics()  # this worker's files exist, even before its first canary request
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for family in registry.collect():
            if not family.name.startswith(_PREFIX):
                continue
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("route", ""), labels.get("arm", ""))
                entry = found.setdefault(
                    key, {"requests": 0, "errors": 0, "fallbacks": 0, "latency": {}}
                )
                name = sample.name[len(_PREFIX) + 1 :]
                if name in ("requests_total", "errors_total", "fallbacks_total"):
                    entry[name[: -len("_total")]] += int(sample.value)
                elif name == "duration_seconds_bucket":
                    entry["latency"][float(labels["le"])] = sample.value
        return found

    def snapshot(self, controls: Iterable[CanaryControl]) -> list[dict[str, Any]]:
        """Each canary's setting and counts (every worker's when there is a directory)."""
        snapshots = [control.snapshot() for control in controls]
        if self.directory is None:
            return snapshots
        merged = self.merged()
        for snapshot in snapshots:
            for arm, counts in snapshot["arms"].items():
                entry = merged.get((snapshot["rule"], arm))
                if entry is None:
                    continue
                latency = entry.pop("latency")
                counts.update(entry)
                counts["p50"] = percentile(latency, 0.5)
                counts["p99"] = percentile(latency, 0.99)
            snapshot["whole_server"] = True
        return snapshots

    def prometheus(self, controls: Iterable[CanaryControl]) -> str:
        """Each canary's setting, and (for one worker) its counts, in the text format."""
        controls = list(controls)
        if not controls:
            return ""
        lines = [
            f"# HELP {_PREFIX}_share The share of a canary route's requests sent to the view.",
            f"# TYPE {_PREFIX}_share gauge",
        ]
        for control in controls:
            lines.append(f'{_PREFIX}_share{{route="{escape(control.rule)}"}} {control.share:g}')
        lines.append(f"# HELP {_PREFIX}_state A canary route's state: 1 for the one it is in.")
        lines.append(f"# TYPE {_PREFIX}_state gauge")
        for control in controls:
            for state in STATES:
                value = int(control.state == state)
                lines.append(
                    f'{_PREFIX}_state{{route="{escape(control.rule)}",state="{state}"}} {value}'
                )
        if self.directory is None:  # else the whole-server text has them, from the files
            for name in ("requests", "errors", "fallbacks"):
                lines.append(f"# HELP {_PREFIX}_{name}_total {_HELP[name]}")
                lines.append(f"# TYPE {_PREFIX}_{name}_total counter")
                for control in controls:
                    for arm, counts in control.arms.items():
                        labels = f'route="{escape(control.rule)}",arm="{arm}"'
                        lines.append(f"{_PREFIX}_{name}_total{{{labels}}} {getattr(counts, name)}")
            name = f"{_PREFIX}_duration_seconds"
            lines.append(f"# HELP {name} {_HELP['duration_seconds']}")
            lines.append(f"# TYPE {name} histogram")
            for control in controls:
                for arm, counts in control.arms.items():
                    lines.extend(_histogram(name, control.rule, arm, counts.latency))
        return "\n".join(lines) + "\n"


def _histogram(name: str, rule: str, arm: str, histogram: Histogram) -> list[str]:
    labels = f'route="{escape(rule)}",arm="{arm}"'
    lines = []
    for bound, count in histogram.cumulative():
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} {histogram.sum!r}")
    lines.append(f"{name}_count{{{labels}}} {histogram.count}")
    return lines
