"""bridge's own test of each behaviour a skipped peer case checks (see suites.py).

The peer case asserts its own message shape or error habit; the behaviour under it
(what the client receives) is asserted here in bridge's terms, with the same app
and the same scope. The apps are the peers', so those that break wsgiref.validate's
stricter rules (no Content-Type on a 200, ``read()`` without a size) run unwrapped.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge

from ..asgi import Client

Environ = dict[str, Any]


def scope(path: str = "/", **extra: Any) -> dict[str, Any]:
    """asgiref's scopes: HTTP/1.0, headers as lists, no client, server or root_path."""
    return {
        "type": "http",
        "http_version": "1.0",
        "method": "GET",
        "path": path,
        "query_string": b"bar=baz",
        "headers": [],
        **extra,
    }


def run(app: Any, request_scope: dict[str, Any], *chunks: bytes, **options: Any) -> Client:
    client = Client(chunks or (b"",))
    asyncio.run(client.run(Bridge(app, **options), request_scope))
    assert client.finished
    return client


def test_asgiref_basic_wsgi() -> None:
    """Header items as lists, duplicate request headers joined with ",", two chunks."""

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        assert environ["HTTP_TEST_HEADER"] == "test value 1,test value 2"
        start_response("200 OK", [["X-Colour", "Blue"]])
        yield b"first chunk "
        yield b"second chunk"

    headers = [[b"test-header", b"test value 1"], [b"test-header", b"test value 2"]]
    client = run(app, scope("/foo/", headers=headers))
    assert client.status == 200
    assert client.headers[b"x-colour"] == b"Blue"
    assert client.body == b"first chunk second chunk"


def test_asgiref_wsgi_path_encoding() -> None:
    seen: list[tuple[str, str]] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen.append((environ["SCRIPT_NAME"], environ["PATH_INFO"]))
        start_response("200 OK", [])
        return [b""]

    client = run(app, scope("/中文", root_path="/中国"))
    assert seen == [("/中国".encode().decode("latin-1"), "/中文".encode().decode("latin-1"))]
    assert (client.status, client.body) == (200, b"")


def test_asgiref_wsgi_empty_body() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return []

    client = run(app, scope())
    assert client.sent[0]["type"] == "http.response.start"  # always sent, as asgiref asks
    assert (client.status, client.body) == (200, b"")


def test_asgiref_wsgi_clamped_body() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "8")])
        return [b"0123", b"45", b"6789"]

    client = run(app, scope())  # not validated: the app breaks its own Content-Length
    assert client.headers[b"content-length"] == b"8"
    assert client.body == b"01234567"


def test_asgiref_wsgi_stops_iterating_after_content_length_bytes() -> None:
    advanced: list[str] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "4")])
        yield b"0123"
        advanced.append("past the length")
        yield b"4567"

    client = run(app, scope())
    assert client.body == b"0123"
    assert advanced == []


def test_asgiref_wsgi_multiple_start_response() -> None:
    """Only the last start_response's Content-Length counts."""

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        try:
            raise ValueError("Application Error")
        except ValueError:
            start_response("500 Server Error", [], sys.exc_info())
            return [b"Some long error message"]

    client = run(app, scope())
    assert client.status == 500
    assert client.body == b"Some long error message"
    assert client.headers[b"content-length"] == b"23"


def test_asgiref_wsgi_multi_body() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        assert environ["wsgi.input"].read(12) == b"Hello World!"
        start_response("200 OK", [])
        return []

    request = scope(method="POST", headers=[[b"content-length", b"12"]])
    assert run(app, request, b"Hello ", b"World!").status == 200


def echo_body(environ: Environ, start_response: Any) -> list[bytes]:
    output = environ["wsgi.input"].read()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(output)))],
    )
    return [output]


def test_hypercorn_wsgi_asyncio() -> None:
    client = run(echo_body, scope(root_path="/", raw_path=b"/"))
    assert client.sent[0] == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"0")],
    }
    assert client.body == b""


def test_hypercorn_max_body_size() -> None:
    client = run(echo_body, scope(), b"abcde", max_body_size=4)
    assert client.status == 413


def test_hypercorn_no_start_response(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        return [b"result"]

    client = run(app, scope())
    assert client.status == 500
    assert b"result" not in client.body
    assert "start_response" in caplog.text


def test_a2wsgi_starlette_uvicorn_wsgi_exception(caplog: pytest.LogCaptureFixture) -> None:
    """The peers let the exception escape; the client sees a 500 either way."""

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        raise RuntimeError("Something went wrong")

    client = run(validator(app), scope())
    assert client.status == 500
    assert b"Something went wrong" not in client.body
    assert "Something went wrong" in caplog.text


def test_a2wsgi_starlette_wsgi_exc_info() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            raise RuntimeError("Something went wrong")
        except RuntimeError:
            output = b"Internal Server Error"
            headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(output))),
            ]
            start_response("500 Internal Server Error", headers, sys.exc_info())
            return [output]

    client = run(validator(app), scope())
    assert (client.status, client.body) == (500, b"Internal Server Error")
