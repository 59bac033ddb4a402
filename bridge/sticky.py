"""Sticky shares: the same user lands on the same side of a split, in every worker and host.

A canary sends a share of a route's requests to the new view, and a shadow route
samples a share of them. Drawn per request, one user's session would flip between the
two sides; drawn from a key the request carries (a session cookie, a header, the
client address), one user always sees one side. The point is a hash of the route's
rule and the key, so every process on every host draws the same point with no shared
state (GoReplay and Diffy sample the same way).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.http import parse_cookie

from ._types import Scope

KINDS = ("cookie", "header", "client")


@dataclass(frozen=True)
class StickyKey:
    """Where a request's key comes from: ``"cookie:NAME"``, ``"header:NAME"`` or ``"client"``."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, spec: str) -> StickyKey:
        """The key a spec such as ``"cookie:sessionid"`` names; a sentence for a bad one."""
        if not isinstance(spec, str):
            raise TypeError(f'key= takes a string such as "cookie:sessionid", not {spec!r}.')
        kind, colon, name = spec.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind == "client" and not colon:
            return cls("client")
        if kind in ("cookie", "header") and name:
            return cls(kind, name if kind == "cookie" else name.lower())
        raise ValueError(
            f'The key "{spec}" must be "cookie:NAME", "header:NAME" or "client", '
            'such as key="cookie:sessionid".'
        )

    def of(self, scope: Scope) -> bytes | None:
        """This request's key, or None when it carries none (then the draw is per request)."""
        if self.kind == "client":
            client = scope.get("client")
            return client[0].encode("utf-8") if client else None
        wanted = b"cookie" if self.kind == "cookie" else self.name.encode("latin-1")
        values = [value for name, value in scope.get("headers", ()) if name.lower() == wanted]
        if not values:
            return None
        if self.kind == "header":
            return b",".join(values)
        cookies = parse_cookie("; ".join(v.decode("latin-1") for v in values))
        found = cookies.get(self.name)
        return found.encode("utf-8") if found else None

    def __str__(self) -> str:
        return self.kind if self.kind == "client" else f"{self.kind}:{self.name}"


def point(rule: str, key: bytes) -> float:
    """The key's place in [0, 1) for this rule: the same everywhere, independent per rule."""
    digest = hashlib.blake2b(rule.encode("utf-8") + b"\0" + key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def draw(
    rule: str,
    key: StickyKey | None,
    scope: Scope,
    share: float,
    rng: Callable[[], float] = random.random,
) -> bool:
    """Whether this request falls in the ``share`` of ``rule``: by its key when it has one."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    value = key.of(scope) if key is not None else None
    return (point(rule, value) if value is not None else rng()) < share
