"""The counters of shadow routes, the mismatches they keep, and how both are shown.

One ``ShadowStats`` per shadow route. Its counts and reports change on the event loop
only; ``logged_at`` is the exception, written by whichever thread logs for a shadow run
(``QuietShadows``), where a race can at worst let one extra line through.

Reports are grouped by kind: mismatches whose differences are at the same places
(``body $.items[*].price``, ``status 200 -> 500``), and failures of one exception type,
make one kind, kept with its count and its latest example. Memory is fixed per route
whatever the traffic: a few counters, a dict of skip reasons (a fixed set of keys), at
most ``keep`` kinds, and at most ``store_bytes`` of examples (measured as the JSON the
dashboard sends); a kind that finds no room is counted in ``unkept``. An example keeps
no secrets by default: query names without values, the compared headers' values only,
no body unless the route says ``show_bodies=True``; every value truncated.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .._types import RawHeaders
from ..metrics.prometheus import escape
from ..metrics.values import Count
from .compare import SECRET_HEADERS, Captured, Difference, kept, kept_body, truncate

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
    "share": "the shadows' share of the threads was in use",
}

OUTCOMES = ("matched", "mismatched", "failed", "skipped")

# Request headers whose values a report keeps, so that a downloaded mismatch replays
# the same content negotiation; every other request header keeps only its name.
REPLAYED_HEADERS = frozenset({"accept", "accept-language", "content-type", "host"})

# Noise fields learned per route: enough for the timestamps and ids of any real page.
MAX_NOISE = 50


@dataclass
class Kind:
    """One kind of mismatch or failure: its count and its latest example."""

    id: str  # a short hash of ``outcome`` and ``kind``: the name of its download
    outcome: str  # "mismatch" or "failure"
    kind: str
    count: int
    latest: dict[str, Any]
    size: int  # bytes of ``latest`` as JSON

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "kind": self.kind,
                "count": self.count, "latest": self.latest}  # fmt: skip


def kept_request(
    method: str, path: str, query: bytes, headers: RawHeaders, body: bytes, config: Shadow
) -> dict[str, Any]:
    """The request of a report: its query's names (values with ``show_query``), the
    values of ``REPLAYED_HEADERS`` only, and its body only with ``show_bodies``."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept_query: list[tuple[str, str | None]] = [
        (truncate(k), truncate(v) if config.show_query else None) for k, v in pairs[:30]
    ]
    shown = "&".join(k if v is None else f"{k}={v}" for k, v in kept_query)
    kept_headers: list[list[str]] = []
    others: list[str] = []
    for name, value in headers[:100]:
        key = bytes(name).decode("latin-1").lower()
        if key in REPLAYED_HEADERS and key not in SECRET_HEADERS:
            kept_headers.append([key, truncate(bytes(value).decode("latin-1"))])
        else:
            others.append(truncate(key))
    return {
        "method": method,
        "path": truncate(path),
        "query": [list(pair) for pair in kept_query],
        "target": truncate(path + ("?" + shown if shown else "")),
        "headers": kept_headers,
        "other_headers": others,
        "body": kept_body(body, config.keep_body_chars) if config.show_bodies else None,
        "body_bytes": len(body),
    }


class ShadowStats:
    """What the shadow runs of one route found: counts, the match streak, kinds of report."""

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
        self.kinds: dict[str, Kind] = {}
        self.store_used = 0  # bytes of the kept examples
        self.unkept = 0  # mismatches and failures of kinds that found no room
        self.noise: dict[str, int] = {}  # learned noise: kind of difference -> times seen
        self.noise_runs = 0  # requests the legacy app answered twice
        # Other workers' mismatches and failures of this rule, as last read from the
        # whole-server files (None: never read); a rise ends this worker's streak.
        self.others_bad: int | None = None

    @property
    def ready(self) -> bool:
        """Whether the last ``ready_after`` comparisons all matched."""
        return self.streak >= self.config.ready_after

    @property
    def mismatches(self) -> list[dict[str, Any]]:
        """The latest example of each kind of mismatch, in the order the kinds appeared."""
        return [k.latest for k in self.kinds.values() if k.outcome == "mismatch"]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The latest example of each kind of failure, in the order the kinds appeared."""
        return [k.latest for k in self.kinds.values() if k.outcome == "failure"]

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

    def learn_noise(self, differences: list[Difference]) -> None:
        """Note the kinds of difference between two answers of the legacy app."""
        self.noise_runs += 1
        for difference in differences:
            kind = difference.kind
            if kind in self.noise or len(self.noise) < MAX_NOISE:
                self.noise[kind] = self.noise.get(kind, 0) + 1

    def mismatch(
        self, request: dict[str, Any], differences: list[Difference], legacy: Captured,
        shadow: Captured,
    ) -> None:  # fmt: skip
        self.mismatched += 1
        self.streak = 0
        config = self.config
        chars, headers, show = config.keep_body_chars, config.headers, config.show_bodies
        example = {
            "time": time.time(),
            "method": request["method"],
            "path": request["target"],
            "request": request,
            "differences": [d.as_dict() for d in differences],
            "legacy": kept(legacy, chars, headers, show),
            "shadow": kept(shadow, chars, headers, show),
        }
        kind = "; ".join(dict.fromkeys(d.kind for d in differences)) or "(none)"
        self._keep("mismatch", kind, example)

    def fail(self, request: dict[str, Any], error: str, exception: str = "") -> None:
        """Count a failed run; ``exception`` (a type name) groups it, else ``error`` does."""
        self.failed += 1
        self.streak = 0
        example = {
            "time": time.time(),
            "method": request["method"],
            "path": request["target"],
            "request": request,
            "error": truncate(error),
        }
        self._keep("failure", exception or truncate(error, 80), example)

    def _keep(self, outcome: str, kind: str, example: dict[str, Any]) -> None:
        size = len(json.dumps(example))
        key = hashlib.blake2b(f"{outcome}\0{kind}".encode(), digest_size=6).hexdigest()
        found = self.kinds.get(key)
        if found is not None:
            found.count += 1
            if self.store_used - found.size + size <= self.config.store_bytes:
                self.store_used += size - found.size
                found.latest, found.size = example, size
            return
        if len(self.kinds) < self.config.keep and self.store_used + size <= self.config.store_bytes:
            self.kinds[key] = Kind(key, outcome, truncate(kind), 1, example, size)
            self.store_used += size
        else:
            self.unkept += 1

    def report(self, kind_id: str) -> dict[str, Any] | None:
        """A kept kind's latest example as a file ``bridge replay`` runs, or None."""
        found = self.kinds.get(kind_id)
        if found is None:
            return None
        config = self.config
        return {
            "bridge": "shadow mismatch",
            "version": 1,
            "route": self.rule,
            "outcome": found.outcome,
            "kind": found.kind,
            "count": found.count,
            "compared_headers": list(config.headers),
            "show_bodies": config.show_bodies,
            "noise": sorted(self.noise),
            **found.latest,
        }

    def snapshot(self) -> dict[str, Any]:
        config = self.config
        return {
            "route": self.rule,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "rate": config.rate,
            "key": None if config.sticky is None else str(config.sticky),
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
            "kinds": [k.as_dict() for k in self.kinds.values()],
            "unkept": self.unkept,
            "store_used": self.store_used,
            "store_bytes": config.store_bytes,
            "noise": config.noise,
            "noise_fields": [{"kind": k, "seen": n} for k, n in self.noise.items()],
            "noise_runs": self.noise_runs,
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
    "bridge_shadow_bad_heard": (
        "gauge",
        "The mismatches and failures of every worker this worker has reset its streak for.",
    ),
}

Summed = dict[str, dict[tuple[tuple[str, str], ...], float]]


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
        heard = max(s.others_bad or 0 for s in group) + sum(s.mismatched + s.failed for s in group)
        for name, value in (
            ("bridge_shadow_match_streak", min(s.streak for s in group)),
            ("bridge_shadow_ready", int(all(s.ready for s in group))),
            ("bridge_shadow_bad_heard", heard),
        ):
            found.append(Count(name, "gauge", _HELP[name][1], (("route", rule),), value))
    return found


def _by_rule(all_stats: list[ShadowStats]) -> dict[str, list[ShadowStats]]:
    by_rule: dict[str, list[ShadowStats]] = {}
    for stats in all_stats:
        by_rule.setdefault(stats.rule, []).append(stats)
    return by_rule


def _bad(summed: Summed, rule: str) -> int:
    """Every worker's mismatches and failures of ``rule``."""
    comparisons = summed.get("bridge_shadow_comparisons_total", {})
    return sum(
        int(comparisons.get(tuple(sorted((("route", rule), ("outcome", outcome)))), 0))
        for outcome in ("mismatched", "failed")
    )


def _per_worker(summed: Summed, name: str, rule: str) -> dict[str, float]:
    """A per-worker gauge of ``rule``, by pid."""
    found: dict[str, float] = {}
    for labels, value in summed.get(name, {}).items():
        given = dict(labels)
        if given.get("route") == rule and "pid" in given:
            found[given["pid"]] = value
    return found


def hear(all_stats: list[ShadowStats], summed: Summed) -> None:
    """Reset the streaks of routes another worker has since seen differ or fail in.

    Each worker then counts only matches since the whole server's latest mismatch, so
    the sum of the live workers' streaks is the whole server's matches in a row (to
    within one read of the files: ``Metrics.refresh``, at every history point)."""
    for rule, group in _by_rule(all_stats).items():
        others = max(_bad(summed, rule) - sum(s.mismatched + s.failed for s in group), 0)
        for stats in group:
            if stats.others_bad is not None and others > stats.others_bad:
                stats.streak = 0
            stats.others_bad = max(others, stats.others_bad or 0)


def whole_server(entries: list[dict[str, Any]], summed: Summed) -> list[dict[str, Any]]:
    """The dashboard's entries with every worker's counts in place of this worker's.

    The counts are per rule: an entry that shares its rule with another (the same path,
    other methods) keeps this worker's, rather than show both the pair's sum. Readiness
    is the whole server's: the live workers' streaks added up, and only once every live
    worker has heard of every mismatch and failure (so none still counts a streak that
    another worker's mismatch has ended).
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
        streaks = _per_worker(summed, "bridge_shadow_match_streak", rule)
        if streaks:
            heard = _per_worker(summed, "bridge_shadow_bad_heard", rule)
            caught_up = all(heard.get(pid, 0) >= _bad(summed, rule) for pid in streaks)
            entry["streak"] = int(sum(streaks.values()))
            entry["workers"] = len(streaks)
            entry["ready"] = caught_up and entry["streak"] >= entry["ready_after"]
    return entries
