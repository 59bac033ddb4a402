"""The counters of shadow routes, the mismatches they keep, and how both are shown.

One ``ShadowStats`` per shadow route. Its counts and reports change on the event loop
only; ``logged_at`` is the exception, written by whichever thread logs for a shadow run
(``QuietShadows``), where a race can at worst let one extra line through. Memory is fixed
per route whatever the traffic: four counters, a dict of skip reasons (a fixed set of
keys), and the first ``keep`` mismatches and failures, each a few KiB at most since
``compare.py`` truncates every value and drops credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..metrics.prometheus import escape
from ..metrics.values import Count
from .compare import Captured, Difference, kept, truncate

if TYPE_CHECKING:
    from .config import Shadow

# Why a request was answered by the legacy app alone, without its shadow run. The
# keys are the Prometheus label values; the text is what the dashboard shows.
SKIP_REASONS = {
    "budget": "the shadow budget (max_shadows) was full",
    "threads": "every worker thread was busy",
    "loop": "the event loop was lagging",
    "request_too_large": "the request body was over the capture limit",
    "response_too_large": "the legacy response was over the capture limit",
    "incomplete": "the legacy response was not sent whole",
    "file": "the legacy response was a file sent by the server",
}

OUTCOMES = ("matched", "mismatched", "failed", "skipped")


class ShadowStats:
    """What the shadow runs of one route found: counts, the match streak, first reports."""

    def __init__(self, rule: str, methods: frozenset[str] | None, config: Shadow) -> None:
        self.rule = rule
        self.methods = methods
        self.config = config
        self.matched = 0
        self.mismatched = 0
        self.failed = 0
        self.skipped = 0
        self.unsampled = 0  # requests the sampling rate left out (not a comparison)
        self.streak = 0  # comparisons in a row that matched
        # When a shadow run last logged (QuietShadows): set from the loop or a worker thread.
        self.logged_at: float | None = None
        self.skips: dict[str, int] = {}
        self.mismatches: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    @property
    def ready(self) -> bool:
        """Whether the last ``ready_after`` comparisons all matched."""
        return self.streak >= self.config.ready_after

    def sample_out(self) -> None:
        self.unsampled += 1

    def match(self) -> None:
        self.matched += 1
        self.streak += 1

    def skip(self, reason: str) -> None:
        # A skipped request says nothing about the view: the streak stands.
        assert reason in SKIP_REASONS, reason
        self.skipped += 1
        self.skips[reason] = self.skips.get(reason, 0) + 1

    def mismatch(
        self, request: tuple[str, str], differences: list[Difference], legacy: Captured,
        shadow: Captured,
    ) -> None:  # fmt: skip
        self.mismatched += 1
        self.streak = 0
        if len(self.mismatches) < self.config.keep:
            chars = self.config.keep_body_chars
            self.mismatches.append(
                {
                    "time": time.time(),
                    "method": request[0],
                    "path": truncate(request[1]),
                    "differences": [d.as_dict() for d in differences],
                    "legacy": kept(legacy, chars),
                    "shadow": kept(shadow, chars),
                }
            )

    def fail(self, request: tuple[str, str], error: str) -> None:
        self.failed += 1
        self.streak = 0
        if len(self.failures) < self.config.keep:
            self.failures.append(
                {
                    "time": time.time(),
                    "method": request[0],
                    "path": truncate(request[1]),
                    "error": truncate(error),
                }
            )

    def snapshot(self) -> dict[str, Any]:
        config = self.config
        return {
            "route": self.rule,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "rate": config.rate,
            "unsafe": config.unsafe,
            "headers": list(config.headers),
            "matched": self.matched,
            "mismatched": self.mismatched,
            "failed": self.failed,
            "skipped": self.skipped,
            "unsampled": self.unsampled,
            "skips": {SKIP_REASONS[k]: n for k, n in sorted(self.skips.items())},
            "streak": self.streak,
            "ready_after": config.ready_after,
            "ready": self.ready,
            "mismatches": list(self.mismatches),
            "failures": list(self.failures),
        }


_HELP = {
    "bridge_shadow_comparisons_total": (
        "counter",
        "Requests to a shadow route, by outcome: the view's response matched the legacy "
        "one, differed, failed, or the shadow run was skipped.",
    ),
    "bridge_shadow_skipped_total": ("counter", "Shadow runs skipped, by reason."),
    "bridge_shadow_match_streak": ("gauge", "Comparisons in a row that matched."),
    "bridge_shadow_ready": (
        "gauge",
        "1 once the last ready_after comparisons of the route all matched, else 0.",
    ),
}


def prometheus(all_stats: list[ShadowStats]) -> str:
    """The shadow counters in the Prometheus text format 0.0.4; empty with no shadow route.

    Series are labelled by rule; two shadow routes of one rule (for other methods) add
    up into one series, ready only when both are."""
    if not all_stats:
        return ""
    by_rule: dict[str, list[ShadowStats]] = {}
    for stats in all_stats:
        by_rule.setdefault(stats.rule, []).append(stats)
    lines: list[str] = []

    def family(name: str, values: Callable[[list[ShadowStats]], list[tuple[str, int]]]) -> None:
        kind, text = _HELP[name]
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for rule, group in sorted(by_rule.items()):
            route = f'route="{escape(rule)}"'
            for extra, value in values(group):
                lines.append(f"{name}{{{route}{extra}}} {value}")

    family(
        "bridge_shadow_comparisons_total",
        lambda group: [(f',outcome="{o}"', sum(getattr(s, o) for s in group)) for o in OUTCOMES],
    )
    family(
        "bridge_shadow_skipped_total",
        lambda group: [
            (f',reason="{r}"', sum(s.skips.get(r, 0) for s in group)) for r in SKIP_REASONS
        ],
    )
    family("bridge_shadow_match_streak", lambda group: [("", min(s.streak for s in group))])
    family("bridge_shadow_ready", lambda group: [("", int(all(s.ready for s in group)))])
    return "\n".join(lines) + "\n"


def counts(all_stats: list[ShadowStats]) -> list[Count]:
    """The series of ``prometheus()``, as values the whole server sums across workers."""
    by_rule: dict[str, list[ShadowStats]] = {}
    for stats in all_stats:
        by_rule.setdefault(stats.rule, []).append(stats)
    found: list[Count] = []
    comparisons, skipped = "bridge_shadow_comparisons_total", "bridge_shadow_skipped_total"
    for rule, group in sorted(by_rule.items()):
        for outcome in OUTCOMES:
            value = sum(getattr(s, outcome) for s in group)
            labels = (("route", rule), ("outcome", outcome))
            found.append(Count(comparisons, "counter", _HELP[comparisons][1], labels, value))
        for reason in SKIP_REASONS:
            value = sum(s.skips.get(reason, 0) for s in group)
            labels = (("route", rule), ("reason", reason))
            found.append(Count(skipped, "counter", _HELP[skipped][1], labels, value))
        for name, value in (
            ("bridge_shadow_match_streak", min(s.streak for s in group)),
            ("bridge_shadow_ready", int(all(s.ready for s in group))),
        ):
            found.append(Count(name, "gauge", _HELP[name][1], (("route", rule),), value))
    return found


def whole_server(
    entries: list[dict[str, Any]], summed: dict[str, dict[tuple[tuple[str, str], ...], float]]
) -> list[dict[str, Any]]:
    """The dashboard's entries with every worker's counts in place of this worker's.

    The counts are per rule: an entry that shares its rule with another (the same path,
    other methods) keeps this worker's, rather than show both the pair's sum.
    """
    rules = [entry["route"] for entry in entries]
    comparisons = summed.get("bridge_shadow_comparisons_total", {})
    skipped = summed.get("bridge_shadow_skipped_total", {})
    for entry in entries:
        rule = entry["route"]
        if rules.count(rule) != 1:
            continue
        for outcome in OUTCOMES:
            key = tuple(sorted((("route", rule), ("outcome", outcome))))
            entry[outcome] = int(comparisons.get(key, entry[outcome]))
        skips = {}
        for reason, text in SKIP_REASONS.items():
            key = tuple(sorted((("route", rule), ("reason", reason))))
            if skipped.get(key):
                skips[text] = int(skipped[key])
        entry["skips"] = skips
    return entries
