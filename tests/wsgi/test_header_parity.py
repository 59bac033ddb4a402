"""Message level: requests whose headers are ambiguous get 400 with ``Connection: close``
and a sentence, and the application never runs."""

from __future__ import annotations

import asyncio
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge
from tests.asgi import Client, http_scope

CASES = [
    ([(b"host", b"good.example"), (b"host", b"evil.example")], b"2 Host header fields"),
    (
        [(b"host", b"a"), (b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        b"both Content-Length and Transfer-Encoding ('chunked')",
    ),
    (
        [(b"host", b"a"), (b"content-length", b"5"), (b"content-length", b"6")],
        b"Content-Length values that differ ('5,6')",
    ),
]


@pytest.mark.parametrize(("headers", "says"), CASES)
def test_ambiguous_headers_are_400_with_connection_close(
    headers: list[tuple[bytes, bytes]], says: bytes
) -> None:
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    client = Client([b"hello"])
    scope = http_scope("/upload", method="POST", headers=headers)
    asyncio.run(client.run(Bridge(validator(app)), scope))
    assert client.status == 400
    assert client.headers[b"connection"] == b"close"
    assert says in client.body and client.body.startswith(b"Bad Request: ")
    assert called == []
