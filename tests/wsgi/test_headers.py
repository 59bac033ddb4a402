"""Response header rules: the shapes gunicorn accepts, and the values nobody may send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bridge.wsgi.headers as headers_module
from bridge import Bridge
from bridge.errors import ResponseError
from bridge.wsgi.headers import encode_headers, parse_status
from tests.asgi import Client, http_scope

Environ = dict[str, Any]


@pytest.mark.parametrize(
    "headers",
    [
        [["Content-Type", "text/plain"], ["X-Colour", "Blue"]],  # lists, as asgiref's tests send
        (("Content-Type", "text/plain"), ("X-Colour", "Blue")),  # a tuple of headers
        [("Content-Type", "text/plain"), ["X-Colour", "Blue"]],  # mixed
    ],
)
def test_any_two_item_sequences_are_accepted(headers: Any) -> None:
    """gunicorn, waitress and asgiref accept these; wsgiref.validate would not, so the
    app is not wrapped in it."""

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"ok"]

    client = Client()
    asyncio.run(client.run(Bridge(app), http_scope()))
    assert client.status == 200
    assert client.sent[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (b"x-colour", b"Blue"),
        (b"content-length", b"2"),
    ]
    assert client.body == b"ok"


@pytest.mark.parametrize(
    "headers",
    [
        [["X-Bad", "a\r\nSet-Cookie: x=1"]],
        (("X-Bad", "a\nb"),),
        [["X-Bad", "caf\u20ac"]],  # not latin-1
        [["X-Bad"]],
        [["X-Bad", "1", "2"]],
        "X-Bad: 1",
        [("X-Bad", 1)],
    ],
)
def test_bad_items_are_still_refused(headers: Any) -> None:
    with pytest.raises(ResponseError):
        encode_headers(headers)

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"ok"]

    client = Client()
    asyncio.run(client.run(Bridge(app), http_scope()))
    assert client.status == 500
    assert b"X-Bad" not in client.body


def test_checked_names_and_status_lines_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An app that puts request data in its header names or reasons sends a new one each
    # time: the caches stop at their bound, and what comes past it is still checked.
    monkeypatch.setattr(headers_module, "_NAMES", {})
    monkeypatch.setattr(headers_module, "_STATUS_CODES", {})
    bound = headers_module._MAX_CACHED
    for number in range(2 * bound):
        raw, _ = encode_headers([(f"X-Echo-{number}", "tab\tand DEL\x7f and \xe9")])
        assert raw == [(f"x-echo-{number}".encode(), b"tab\tand DEL\x7f and \xe9")]
        assert parse_status(f"299 Reason {number}") == 299
    assert len(headers_module._NAMES) == bound
    assert len(headers_module._STATUS_CODES) == bound
    assert headers_module._NAMES["X-Echo-0"] == b"x-echo-0"
    # Remembered or not, a bad value, name or status line is refused.
    for name in ("X-Echo-0", f"X-Echo-{2 * bound - 1}"):
        with pytest.raises(ResponseError, match="CR, LF or NUL"):
            encode_headers([(name, "a\r\nSet-Cookie: x=1")])
    with pytest.raises(ResponseError, match="not a valid HTTP token"):
        encode_headers([("X Bad", "1")])
    with pytest.raises(ResponseError, match="three-digit"):
        parse_status("200 OK\r\nX-Injected: 1")
    assert "X Bad" not in headers_module._NAMES
