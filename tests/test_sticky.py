"""Sticky shares: one key, one side, whatever the process; a sentence for a bad key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.sticky import StickyKey, draw, point

from .asgi import http_scope


def with_headers(*headers: tuple[bytes, bytes], client: str = "10.0.0.1") -> dict[str, object]:
    scope = http_scope("/items/7")
    scope["headers"] = list(headers)
    scope["client"] = (client, 5000)
    return scope


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("cookie:sessionid", "cookie", "sessionid"),
        ("header:X-User", "header", "x-user"),
        (" Cookie : sid ", "cookie", "sid"),
        ("client", "client", ""),
    ],
)
def test_key_specs(spec: str, kind: str, name: str) -> None:
    key = StickyKey.parse(spec)
    assert (key.kind, key.name) == (kind, name)


@pytest.mark.parametrize("spec", ["cookie", "cookie:", "query:x", "client:x", ""])
def test_a_bad_key_is_refused_with_a_sentence(spec: str) -> None:
    with pytest.raises(ValueError, match='must be "cookie:NAME", "header:NAME" or "client"'):
        StickyKey.parse(spec)


def test_each_kind_reads_its_part_of_the_request() -> None:
    scope = with_headers(
        (b"cookie", b"theme=dark; sid=abc"), (b"cookie", b"lang=en"), (b"x-user", b"42")
    )
    assert StickyKey.parse("cookie:sid").of(scope) == b"abc"
    assert StickyKey.parse("cookie:lang").of(scope) == b"en"
    assert StickyKey.parse("cookie:missing").of(scope) is None
    assert StickyKey.parse("header:X-User").of(scope) == b"42"
    assert StickyKey.parse("header:X-Other").of(scope) is None
    assert StickyKey.parse("client").of(scope) == b"10.0.0.1"


def test_a_key_always_draws_the_same_side_and_the_share_holds() -> None:
    key = StickyKey.parse("cookie:sid")
    sides = {}
    for n in range(2000):
        scope = with_headers((b"cookie", f"sid=user-{n}".encode()))
        first = draw("/items/<int:item_id>", key, scope, 0.3)
        assert all(draw("/items/<int:item_id>", key, scope, 0.3) == first for _ in range(3))
        sides[n] = first
    share = sum(sides.values()) / len(sides)
    assert 0.25 < share < 0.35


def test_a_request_without_its_key_is_drawn_per_request() -> None:
    key = StickyKey.parse("cookie:sid")
    draws = iter([0.1, 0.9])
    scope = with_headers()
    assert draw("/r", key, scope, 0.5, rng=lambda: next(draws)) is True
    assert draw("/r", key, scope, 0.5, rng=lambda: next(draws)) is False


def test_the_point_is_the_same_in_another_process_and_differs_per_rule() -> None:
    """No per-process seed: Python's own hash() is salted per process, this must not be."""
    here = point("/items/<int:item_id>", b"user-1")
    code = "from bridge.sticky import point; print(repr(point('/items/<int:item_id>', b'user-1')))"
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert float(there) == here
    assert point("/other", b"user-1") != here
