"""``Canary``: how a route shares its traffic with the legacy app. Data only, checked once."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass

from ..sticky import StickyKey

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # RFC 9110 9.2.1, less TRACE

# The view's error rate may exceed the legacy arm's by this much before the canary is
# rolled back: one request in a hundred, Flagger's default success-rate threshold (99 %).
DEFAULT_MAX_ERROR_RATE = 0.01

# Requests the view's arm must have served before its error rate is trusted: at 5 % of
# a route's traffic, a few minutes of a busy one. Flagger waits for a similar sample
# (its "threshold" checks over a one-minute interval).
DEFAULT_MIN_REQUESTS = 200


@dataclass(frozen=True)
class Canary:
    """A canary route: ``canary=0.05`` is ``Canary(share=0.05)``. Arguments, with defaults:

    * ``share``: the part of the route's requests the view answers (0 to 1); the rest
      go to the legacy app. Start small (0.01 to 0.05) and raise it with ``set()``.
    * ``key=None``: ``"cookie:NAME"``, ``"header:NAME"`` or ``"client"``: a request
      carrying the key always lands on the same arm, in every worker and host. None
      draws per request; so does a request that lacks the key.
    * ``fallback=True``: when the view raises or answers 5xx before sending a body
      byte, the legacy app answers the request instead. False shows the view's error.
    * ``max_error_rate=0.01``: how far the view's error rate may exceed the legacy
      arm's before the canary is rolled back (share 0, until someone acts).
    * ``min_requests=200``: requests the view must have answered before that rule applies.
    * ``unsafe=False``: fall back for methods other than GET, HEAD and OPTIONS too; only
      for a view that cannot have written anything before it failed.
    """

    share: float
    key: str | None = None
    fallback: bool = True
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    min_requests: int = DEFAULT_MIN_REQUESTS
    unsafe: bool = False

    def __post_init__(self) -> None:
        check_share(self.share)
        if self.key is not None:
            StickyKey.parse(self.key)
        rate = self.max_error_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(
                f"Canary max_error_rate must be a fraction from 0 to 1, not {rate!r}; "
                "0.01 lets the view fail one request in a hundred more than the legacy app."
            )
        count = self.min_requests
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"Canary min_requests must be an int of at least 1, not {count!r}, "
                "such as min_requests=200."
            )

    @property
    def fingerprint(self) -> str:
        """The same for the same settings: a change announced for other settings (another
        deploy's) is not applied to these."""
        return hashlib.blake2b(repr(astuple(self)).encode(), digest_size=8).hexdigest()

    @property
    def sticky(self) -> StickyKey | None:
        return None if self.key is None else StickyKey.parse(self.key)

    @classmethod
    def of(cls, value: float | Canary | None) -> Canary | None:
        """The configuration for a route's ``canary=`` argument; None for no canary."""
        if value is None:
            return None
        if isinstance(value, Canary):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(share=float(value))
        raise TypeError(
            "canary= takes a share such as 0.05, or a bridge.Canary such as "
            f'Canary(share=0.05, key="cookie:sessionid"); not {value!r}.'
        )

    def falls_back(self, method: str) -> bool:
        """Whether a failed view's request may go to the legacy app: it must not have written."""
        return self.fallback and (self.unsafe or method in SAFE_METHODS)


def check_share(share: object) -> float:
    """``share`` as a float, or a sentence saying what a share must be."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(
            f"A canary share must be a fraction from 0 to 1, not {share!r}; "
            "0.05 sends 5 % of the route's requests to the view."
        )
    return float(share)
