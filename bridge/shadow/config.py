"""``Shadow``: how a route runs in the shadow of the legacy app. Data only, checked once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..sticky import StickyKey
from .compare import Normaliser

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # RFC 9110 9.2.1, less TRACE


# Bytes of request and of response body kept per request: capture memory per request
# is at most twice this. Comparisons of larger bodies than runner.INLINE_COMPARE run in
# a thread, so the size bounds memory, not the loop's time.
DEFAULT_MAX_BODY = 256 * 1024


# A shadow view gets this long to answer before its run counts as failed; a view
# that is this slow has a problem worth seeing on the dashboard anyway.
DEFAULT_TIMEOUT = 10.0


# Matches in a row before the dashboard calls a route ready to switch: a thousand
# real requests is a sample in which a 0.1 % mismatch would likely have shown.
DEFAULT_READY_AFTER = 1000


# Kinds of mismatch (and of failure) kept per route, each with its count and latest
# example; a route with more kinds than this has a problem the first ten already show.
DEFAULT_KEEP = 10


# Characters of each body a kept example holds (with show_bodies=True).
DEFAULT_KEEP_BODY_CHARS = 1024


# Bytes of reports kept per route, whatever the traffic: each example is a few KiB at
# most, so 64 KiB holds the default ten kinds with room to spare, and the dashboard's
# JSON stays small enough to poll every second.
DEFAULT_STORE_BYTES = 64 * 1024


# Of the requests a noise-cancelling route shadows, the share whose legacy answer is
# asked for twice: Diffy asks every request of two primaries; one in ten learns a
# field that differs every time within the first few requests, at a tenth of the cost.
DEFAULT_NOISE_RATE = 0.1


@dataclass(frozen=True)
class Shadow:
    """How a route runs in the shadow of the legacy app; ``shadow=True`` is ``Shadow()``
    and ``shadow=0.1`` is ``Shadow(rate=0.1)``. Arguments, with their defaults:

    * ``rate=1.0``: the share of requests shadowed; lower it on a busy route.
    * ``headers=("content-type",)``: the response headers compared (any case). Add
      the ones whose value matters to clients, such as ``cache-control`` or ``location``.
    * ``normalise=None``: a function given each side's decoded body (parsed JSON, text,
      or bytes) that returns what to compare: mask timestamps, tokens, ordering.
    * ``unsafe=False``: allow methods other than GET, HEAD and OPTIONS. The view then
      runs beside the legacy app and must not write (a dry-run flag, a read replica).
    * ``ready_after=1000``: matches in a row before the route shows "ready to switch".
    * ``timeout=10``: seconds the view may take; past it the run counts as failed.
    * ``max_body=256 KiB``: request or response bodies larger than this are not
      compared (counted as skipped), so capture memory stays bounded.
    * ``key=None``: where the sampling draw comes from, so one user is shadowed on every
      request or on none: ``"cookie:sessionid"``, ``"header:X-User"`` or ``"client"``.
      None draws per request.
    * ``noise=False``: learn noise. On some requests (the first, then ``noise_rate`` of
      them) the legacy app answers twice; the places where its two answers differ (a
      timestamp, a random id) are not counted against the view. Safe methods only.
    * ``noise_rate=0.1``: the share of shadowed requests that learn noise.
    * ``show_bodies=False``: keep bodies (request and responses) and body values in the
      reports. Off, a report says where a body differs and what kind of value each
      side has, never the value: bodies carry emails, tokens and API keys.
    * ``show_query=False``: keep query string values in the reports; off, only names.
    * ``keep=10``, ``keep_body_chars=1024``, ``store_bytes=64 KiB``: kinds of mismatch
      kept for the dashboard (each with a count and its latest example), characters of
      each body kept with them, and the bytes all of a route's reports may take.
    """

    rate: float = 1.0
    headers: tuple[str, ...] = ("content-type",)
    normalise: Normaliser | None = None
    unsafe: bool = False
    ready_after: int = DEFAULT_READY_AFTER
    timeout: float = DEFAULT_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY
    keep: int = DEFAULT_KEEP
    keep_body_chars: int = DEFAULT_KEEP_BODY_CHARS
    key: StickyKey | str | None = None
    noise: bool = False
    noise_rate: float = DEFAULT_NOISE_RATE
    show_bodies: bool = False
    show_query: bool = False
    store_bytes: int = DEFAULT_STORE_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not 0 < self.rate <= 1:
            raise ValueError(
                f"The shadow rate must be a number above 0 and at most 1, not {self.rate!r}; "
                "pass shadow=False to turn shadowing off."
            )
        if isinstance(self.headers, str):
            raise TypeError(
                f"Shadow headers must be a tuple of names, not the string {self.headers!r}; "
                f"write headers=({self.headers!r},)."
            )
        object.__setattr__(self, "headers", tuple(h.lower() for h in self.headers))
        for name, value, least in (
            ("ready_after", self.ready_after, 1),
            ("max_body", self.max_body, 0),
            ("keep", self.keep, 0),
            ("keep_body_chars", self.keep_body_chars, 0),
            ("store_bytes", self.store_bytes, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(
                    f"Shadow {name} must be an int of at least {least}, not {value!r}."
                )
        if not self.timeout > 0:
            raise ValueError(f"Shadow timeout must be above 0 seconds, not {self.timeout!r}.")
        if self.normalise is not None and not callable(self.normalise):
            raise TypeError(f"Shadow normalise must be a function, not {self.normalise!r}.")
        if self.key is not None and not isinstance(self.key, StickyKey):
            object.__setattr__(self, "key", StickyKey.parse(self.key))
        if isinstance(self.noise_rate, bool) or not 0 < self.noise_rate <= 1:
            raise ValueError(
                f"Shadow noise_rate must be a number above 0 and at most 1, not "
                f"{self.noise_rate!r}."
            )
        if self.noise and self.unsafe:
            raise ValueError(
                "Shadow(noise=True) asks the legacy app to answer some requests twice, and "
                "with unsafe=True a request may write: it would write twice. Drop noise=True "
                "and mask what varies with normalise= instead."
            )

    @property
    def sticky(self) -> StickyKey | None:
        """The parsed ``key`` (``__post_init__`` turns a string into a ``StickyKey``)."""
        return self.key if isinstance(self.key, StickyKey) else None

    @classmethod
    def of(cls, value: bool | float | Shadow | None) -> Shadow | None:
        """The configuration for a route's ``shadow=`` argument; None for no shadow."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Shadow):
            return value
        if isinstance(value, (int, float)):
            return cls(rate=float(value))
        raise TypeError(
            f"shadow= takes True, a sampling rate such as 0.1, or a bridge.shadow.Shadow; "
            f"not {value!r}."
        )

    def check_methods(self, rule: str, methods: Iterable[str] | None) -> None:
        """Refuse to shadow a method that may write, unless ``unsafe`` says the view won't."""
        if self.unsafe:
            return
        if methods is None:
            unsafe = "every method"
        else:
            others = sorted({m.upper() for m in methods} - SAFE_METHODS)
            if not others:
                return
            unsafe = ", ".join(others)
        raise ValueError(
            f'The shadow route "{rule}" would run its view for {unsafe} as well as the legacy '
            "app, and a view that writes would then write twice. Shadow only GET, HEAD and "
            'OPTIONS (methods=["GET"]), or, if the view never writes, pass '
            "shadow=Shadow(unsafe=True)."
        )
