"""Check ``Bridge``'s keyword options when it is built, not on the first request.

A wrong option (``max_header_count=None``, ``retry_after="soon"``, a negative size)
would otherwise be accepted and fail on every request later, far from its cause.
Each rule says what the option must be and gives an example; a wrong type raises
``TypeError``, a value out of range ``ValueError``, and both quote the value.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Whole:
    """An ``int`` option of at least ``minimum``; ``None`` too when ``optional``."""

    minimum: int
    example: str
    optional: bool = False

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            nothing = " or None for no limit" if self.optional else ""
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be a whole number{nothing}, "
                f"such as {name}={self.example}."
            )
        if value < self.minimum:
            least = "0 or more" if self.minimum == 0 else f"at least {self.minimum}"
            raise ValueError(
                f"Bridge({name}={value!r}): {name} must be {least}, such as {name}={self.example}."
            )


@dataclass(frozen=True)
class Seconds:
    """A number of seconds, more than zero; ``None`` too when ``optional``."""

    example: str
    optional: bool = True

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be a number of seconds, "
                f"such as {name}={self.example}."
            )
        if not value > 0:  # also refuses NaN
            raise ValueError(
                f"Bridge({name}={value!r}): {name} must be more than 0 seconds, "
                f"such as {name}={self.example}."
            )


@dataclass(frozen=True)
class Hooks:
    """A list of callables (sync or async) run on lifespan startup or shutdown."""

    def check(self, name: str, value: object) -> None:
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be a list of functions, "
                f"such as {name}=[open_pool]."
            )
        for hook in value:
            if not callable(hook):
                raise TypeError(
                    f"Bridge({name}=...): {hook!r} is not a function; {name} takes a "
                    "list of functions, each called with no argument or with the "
                    "lifespan state."
                )


@dataclass(frozen=True)
class Text:
    """A ``str`` option, or ``None`` (the values themselves are checked where used)."""

    example: str

    def check(self, name: str, value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be a str such as "
                f"{name}={self.example}, or None."
            )


@dataclass(frozen=True)
class Names:
    """A list (or tuple) of ``str`` (host names, addresses); ``None`` too when ``optional``."""

    what: str
    example: str
    optional: bool = False

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be a list of {self.what} "
                f"(str), such as {name}={self.example}."
            )


@dataclass(frozen=True)
class Proxies:
    """A mapping of proxy address to the header it sets, or a list of addresses."""

    def check(self, name: str, value: object) -> None:
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return
        Names("addresses", '{"10.0.0.2": "x-real-ip"} or ["127.0.0.1"]').check(name, value)


@dataclass(frozen=True)
class Subclass:
    """A class that is (or derives from) the one ``base()`` returns."""

    base: Callable[[], type]

    def check(self, name: str, value: object) -> None:
        base = self.base()
        if not (inspect.isclass(value) and issubclass(value, base)):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be {base.__module__}."
                f"{base.__qualname__} or a subclass of it."
            )


@dataclass(frozen=True)
class MetricsOption:
    """``True``, ``False`` or a ``bridge.metrics.Metrics``."""

    def check(self, name: str, value: object) -> None:
        from .metrics.registry import Metrics

        if not isinstance(value, (bool, Metrics)):
            raise TypeError(
                f"Bridge({name}={value!r}): {name} must be True, False or a bridge.metrics.Metrics."
            )


def _request() -> type:
    from .requests import Request

    return Request


# Each option's rule; the example is its default, or a typical value when that is None.
RULES: dict[str, Any] = {
    "max_threads": Whole(1, "32"),
    "max_pending": Whole(0, "2048"),
    "max_body_size": Whole(0, "1024 * 1024 * 1024", optional=True),
    "max_header_count": Whole(1, "100"),
    "request_buffer_size": Whole(0, "1024 * 1024"),
    "response_buffer_size": Whole(0, "1024 * 1024"),
    "retry_after": Whole(0, "1"),
    "body_timeout": Seconds("60"),
    "body_deadline": Seconds("300"),
    "max_uploads": Whole(1, "1000"),
    "max_upload_memory": Whole(0, "256 * 1024 * 1024"),
    "max_shadows": Whole(0, "4"),
    "on_startup": Hooks(),
    "on_shutdown": Hooks(),
    "request_class": Subclass(_request),
    "metrics": MetricsOption(),
    "metrics_path": Text('"/_bridge/metrics"'),
    "dashboard_path": Text('"/_bridge/"'),
    "dashboard_token": Text('"a-long-random-string"'),
    "metrics_token": Text('"a-long-random-string"'),
    "allowed_hosts": Names("names", '["example.com"]', optional=True),
    "trusted_proxies": Proxies(),
}


def check_options(**options: object) -> None:
    """Raise ``TypeError`` or ``ValueError`` for the first option that breaks its rule."""
    for name, value in options.items():
        rule = RULES.get(name)
        if rule is not None:
            rule.check(name, value)
