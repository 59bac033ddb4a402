"""Response header rules: the shapes gunicorn accepts, and the values nobody may send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge import Bridge
from bridge.errors import ResponseError
from bridge.wsgi.headers import encode_headers
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
