"""``CanaryControl``: one canary route's share, state and counts, changed only through its methods.

The share and state are read on the event loop for every request of the route and
may be changed from anywhere: ``app.canary(rule).set(0.2)`` in a legacy thread, the
dashboard's POST on the loop, another worker's message from the control channel.
Every change happens under one lock, in one method of this object; a request reads
``share`` and ``state`` once, as one tuple, so it never sees half a change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..metrics.values import Histogram
from .config import Canary, check_share

logger = logging.getLogger("bridge")

RUNNING = "running"
ROLLED_BACK = "rolled back"
PROMOTED = "promoted"
STATES = (RUNNING, ROLLED_BACK, PROMOTED)

VIEW = "view"
LEGACY = "legacy"


class Arm:
    """The counts of one side of a canary: requests, errors, fallbacks and latency."""

    __slots__ = ("errors", "fallbacks", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0  # answers that failed: a 5xx, an exception, a cut response
        self.fallbacks = 0  # the view failed and the legacy app answered instead
        self.latency = Histogram()  # seconds until the client had its whole answer

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "p50": self.latency.percentile(0.5),
            "p99": self.latency.percentile(0.99),
        }


# Announces a change to the other workers: (rule, state, share).
Announce = Callable[[str, str, float], None]


class CanaryControl:
    """The live control of one canary route, as ``app.canary(rule)`` returns it.

    ``share`` and ``state`` ("running", "rolled back", "promoted") read the current
    setting; ``set(share)``, ``rollback()`` and ``promote()`` change it in this worker
    at once and, through the control channel, in every worker sharing its broadcast.
    """

    def __init__(self, rule: str, config: Canary) -> None:
        self.rule = rule
        self.config = config
        self.key = config.sticky
        self._lock = threading.Lock()
        self._setting = (RUNNING, config.share)  # (state, share), replaced whole
        self.arms = {VIEW: Arm(), LEGACY: Arm()}
        # The counts when the setting last changed: the rollback rule judges the view
        # on what it did since someone last acted, not on the round it was rolled back in.
        self._since = {VIEW: (0, 0), LEGACY: (0, 0)}
        self._announce: Announce | None = None

    def __repr__(self) -> str:
        state, share = self._setting
        return f"<CanaryControl {self.rule} {state} share={share:g}>"

    @property
    def share(self) -> float:
        return self._setting[1]

    @property
    def state(self) -> str:
        return self._setting[0]

    @property
    def setting(self) -> tuple[str, float]:
        """``(state, share)``, read together."""
        return self._setting

    def announce_with(self, announce: Announce | None) -> None:
        """Tell ``announce`` of every change made here from now on (None: tell nobody)."""
        self._announce = announce

    # -- acting (any thread) ----------------------------------------------------------

    def set(self, share: float) -> None:
        """Send ``share`` of the route's requests to the view (0 to 1); the state is "running"."""
        self._change(RUNNING, check_share(share))

    def rollback(self) -> None:
        """Send every request to the legacy app until someone calls ``set()`` or ``promote()``."""
        self._change(ROLLED_BACK, 0.0)

    def promote(self) -> None:
        """Send every request to the view; automatic rollback stops (fallback still holds)."""
        self._change(PROMOTED, 1.0)

    def apply(self, state: str, share: float) -> bool:
        """Take a setting announced by another worker (or replayed); False if it is not one."""
        if state not in STATES or isinstance(share, bool) or not isinstance(share, (int, float)):
            return False
        if not 0 <= share <= 1:
            return False
        self._replace(state, float(share))
        return True

    def _change(self, state: str, share: float) -> None:
        self._replace(state, share)
        logger.info("The canary of %s is now %s with a share of %g.", self.rule, state, share)
        announce = self._announce
        if announce is not None:
            announce(self.rule, state, share)

    def _replace(self, state: str, share: float, only_from: str | None = None) -> bool:
        with self._lock:
            if self._setting == (state, share):
                return False
            if only_from is not None and self._setting[0] != only_from:
                return False
            self._setting = (state, share)
            self._since = {name: (arm.requests, arm.errors) for name, arm in self.arms.items()}
            return True

    # -- counting (the loop) ----------------------------------------------------------

    def record(self, arm: str, failed: bool, seconds: float, fallback: bool = False) -> None:
        """Count one request of ``arm``; roll back if the view now fails too often."""
        counts = self.arms[arm]
        counts.requests += 1
        counts.errors += failed
        counts.fallbacks += fallback
        counts.latency.observe(seconds)
        if arm == VIEW and failed:
            self._judge()

    def _judge(self) -> None:
        """The rollback rule: after ``min_requests`` in the view's arm since the last change,
        its error rate may exceed the legacy arm's by at most ``max_error_rate``."""
        if self._setting[0] != RUNNING:
            return
        view_rate, legacy_rate, requests, legacy_requests = self.error_rates()
        if requests < self.config.min_requests:
            return
        # The legacy arm is the baseline. While it takes a share, it needs as many
        # requests as the view's before it counts: one that has seen none yet would
        # pass for faultless. At a share of 1 it has none to give, and the baseline is 0.
        if self._setting[1] < 1.0 and legacy_requests < self.config.min_requests:
            return
        if view_rate - legacy_rate <= self.config.max_error_rate:
            return
        if not self._replace(ROLLED_BACK, 0.0, only_from=RUNNING):
            return  # someone acted meanwhile
        logger.warning(
            "The canary of %s is rolled back: its view failed %.1f %% of %d requests, the "
            "legacy app %.1f %%, more than max_error_rate=%g apart. Every request goes to "
            'the legacy app until someone acts: app.canary("%s").set(share), or the dashboard.',
            self.rule,
            view_rate * 100,
            requests,
            legacy_rate * 100,
            self.config.max_error_rate,
            self.rule,
        )
        announce = self._announce
        if announce is not None:
            announce(self.rule, ROLLED_BACK, 0.0)

    def error_rates(self) -> tuple[float, float, int, int]:
        """The view's and the legacy arm's error rates since the last change, and each
        arm's requests since then."""
        rates = []
        for name in (VIEW, LEGACY):
            arm = self.arms[name]
            requests, errors = self._since[name]
            requests = arm.requests - requests
            rates.append(((arm.errors - errors) / requests if requests else 0.0, requests))
        (view_rate, view_requests), (legacy_rate, legacy_requests) = rates
        return view_rate, legacy_rate, view_requests, legacy_requests

    # -- reading ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        state, share = self._setting
        config = self.config
        return {
            "rule": self.rule,
            "state": state,
            "share": share,
            "key": config.key,
            "fallback": config.fallback,
            "max_error_rate": config.max_error_rate,
            "min_requests": config.min_requests,
            "arms": {name: arm.snapshot() for name, arm in self.arms.items()},
        }
