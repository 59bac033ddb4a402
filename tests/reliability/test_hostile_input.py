"""The hostile input catalogue, each case through a real uvicorn, with raw sockets.

Each case gets a clean answer (the app's own, a 4xx, or a bare 500 that leaks nothing),
a server log that records an application error once, with its traceback, and a
server that still answers the next normal request. The cases run under both of
uvicorn's HTTP parsers, since which layer answers (uvicorn or bridge) depends on it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from bridge import Bridge
from tests.asgi import Client, http_scope

from .apps import SECRET, validated_app
from .conftest import Server, get, request, run_server

SERVER_ERROR = b"Internal Server Error\n"
TRACEBACK = "Traceback (most recent call last)"
UVICORN_UNFINISHED = "ERROR uvicorn.error: ASGI callable returned without completing response."


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One uvicorn per parser, shared by the cases of this module."""
    parser = str(request.param)
    with run_server("hostile", tmp_path_factory.mktemp(parser), "--http", parser) as live:
        yield live


def assert_still_serving(server: Server) -> None:
    response = get(server.port, "/ping")
    assert (response.status, response.body, response.complete) == (200, b"pong", True)


def app_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("ERROR")]


def assert_clean_500(server: Server, path: str, *, traceback: bool = True) -> str:
    """``GET path`` answers a bare 500, logged once; return the log of that request."""
    mark = server.mark()
    response = get(server.port, path)
    log = server.output_since(mark)
    assert (response.status, response.body, response.complete) == (500, SERVER_ERROR, True)
    assert b"secret" not in response.raw and b"Traceback" not in response.raw
    assert app_errors(log) == [f"ERROR bridge: Exception in WSGI application GET {path}"], log
    assert log.count(TRACEBACK) == (1 if traceback else 0), log
    assert_still_serving(server)
    return log


def header_echo(server: Server, *headers: str) -> dict[str, str]:
    response = get(server.port, "/headers", *headers)
    assert response.status == 200, response
    data: dict[str, str] = json.loads(response.body)
    return data


# -- request side ---------------------------------------------------------------------


@pytest.mark.live
def test_underscore_header_alone_is_dropped(server: Server) -> None:
    """``X_Forwarded_For`` never becomes ``HTTP_X_FORWARDED_FOR`` (gunicorn, nginx agree)."""
    seen = header_echo(server, "X_Forwarded_For: 6.6.6.6", "X_Real_IP: 6.6.6.6")
    assert "HTTP_X_FORWARDED_FOR" not in seen
    assert "HTTP_X_REAL_IP" not in seen
    assert_still_serving(server)


@pytest.mark.live
@pytest.mark.parametrize("underscore_first", [True, False])
def test_underscore_header_cannot_spoof_the_dashed_one(
    server: Server, underscore_first: bool
) -> None:
    """Beside the real header, in either order, the underscore twin adds nothing."""
    spoof, real = "X_Forwarded_For: 6.6.6.6", "X-Forwarded-For: 1.2.3.4"
    seen = header_echo(server, *((spoof, real) if underscore_first else (real, spoof)))
    assert seen["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert_still_serving(server)


@pytest.mark.live
def test_thousands_of_duplicate_headers(server: Server) -> None:
    """5,000 copies of one header get a clean 4xx from whichever layer sees them first.

    Measured: both parsers hand all of them to bridge, which answers 431; uvicorn's
    h11 limit is on the bytes of an incomplete head (16 KiB), which a single read
    of this request can get past. A 400 from uvicorn is accepted as clean too.
    """
    mark = server.mark()
    response = get(server.port, "/headers", *["X-Dup: a"] * 5000)
    log = server.output_since(mark)
    assert response.complete
    if response.status == 431:  # bridge answered
        assert response.body == b"Request Header Fields Too Large\n"
        assert "INFO bridge: Refused a request: The request has 5002 header fields" in log
    else:  # uvicorn answered
        assert (response.status, response.body) == (400, b"Invalid HTTP request received.")
    assert app_errors(log) == []
    assert_still_serving(server)


@pytest.mark.live
def test_duplicate_headers_past_the_limit_get_431_from_bridge(server: Server) -> None:
    """Just past ``max_header_count`` (100), bridge itself answers 431."""
    response = get(server.port, "/headers", *["X-Dup: a"] * 99)  # + Host and Connection
    assert response.status == 431
    assert response.body == b"Request Header Fields Too Large\n"
    within = header_echo(server, *["X-Dup: a"] * 98)
    assert within["HTTP_X_DUP"] == ",".join(["a"] * 98)
    assert_still_serving(server)


@pytest.mark.live
@pytest.mark.parametrize(
    ("target", "path_info"),
    [
        ("/%ZZ", "/%ZZ"),  # not a percent-escape: kept as typed
        ("/%FF%FE", "/\xff\xfe"),  # not UTF-8: the bytes, one latin-1 character each
        ("/a%2Fb", "/a/b"),  # an encoded slash decodes, as every WSGI server does
        ("/%", "/%"),
    ],
)
def test_bad_percent_encoding_in_path(server: Server, target: str, path_info: str) -> None:
    response = get(server.port, target)
    assert response.status == 200, response
    assert json.loads(response.body) == {"PATH_INFO": path_info, "QUERY_STRING": ""}
    assert_still_serving(server)


@pytest.mark.live
def test_non_ascii_raw_query_string_is_refused_by_uvicorn(server: Server) -> None:
    """uvicorn (both parsers) refuses raw bytes above 0x7F in the request target: a 400."""
    mark = server.mark()
    response = request(
        server.port, b"GET /q?name=\xc3\xa9&x=\xff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    log = server.output_since(mark)
    assert (response.status, response.body) == (400, b"Invalid HTTP request received.")
    assert app_errors(log) == []
    assert_still_serving(server)


def test_non_ascii_raw_query_string_reaches_the_app_as_latin1() -> None:
    """Servers that pass such bytes on (the ASGI scope allows it) get PEP 3333 latin-1."""
    app = Bridge(validated_app, max_threads=1)
    client = Client()
    scope = http_scope("/q", query_string=b"name=\xc3\xa9&x=\xff", raw_path=b"/q")
    try:
        sent = asyncio.run(client.run(app, scope))
    finally:
        app.pool.shutdown()
    assert sent[0]["status"] == 200
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert json.loads(body) == {"PATH_INFO": "/q", "QUERY_STRING": "name=\xc3\xa9&x=\xff"}


@pytest.mark.live
def test_content_length_beside_chunked_never_frames_the_body_for_the_app(server: Server) -> None:
    """``Content-Length: 3`` with ``Transfer-Encoding: chunked`` and a 5-byte body.

    RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and an intermediary must
    remove the Content-Length before forwarding; gunicorn refuses such a request (400).
    Either answer is safe: a 400, or the app seeing the whole 5 bytes. The app reading
    ``CONTENT_LENGTH`` bytes and taking 3 of 5 as the complete body is not.
    """
    response = request(
        server.port,
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    if response.status != 400:
        assert response.status == 200, response
        assert json.loads(response.body)["size"] == 5, "the app took 3 of 5 bytes as the body"
    assert_still_serving(server)


# -- response side: the application breaks the contract ------------------------------------


@pytest.mark.live
def test_crlf_in_a_response_header_is_a_clean_500(server: Server) -> None:
    """A header value with CR/LF would split the response; it never reaches the wire."""
    log = assert_clean_500(server, "/crlf-header")
    assert "contains CR, LF or NUL" in log


@pytest.mark.live
def test_non_latin1_response_header_is_a_clean_500(server: Server) -> None:
    log = assert_clean_500(server, "/latin1-header")
    assert "is not latin-1" in log


@pytest.mark.live
def test_status_without_reason_phrase_is_accepted(server: Server) -> None:
    mark = server.mark()
    response = get(server.port, "/no-reason")
    assert (response.status, response.body, response.complete) == (200, b"no reason", True)
    assert app_errors(server.output_since(mark)) == []


@pytest.mark.live
def test_never_calling_start_response_is_a_clean_500(server: Server) -> None:
    log = assert_clean_500(server, "/no-start-response")
    assert "before start_response()" in log


@pytest.mark.live
def test_returning_nothing_without_start_response_is_a_clean_500(server: Server) -> None:
    """No exception was raised, so there is no traceback; the error is logged once."""
    log = assert_clean_500(server, "/no-start-response-empty", traceback=False)
    assert log.count("returned without calling start_response()") == 1


@pytest.mark.live
def test_close_that_raises_is_a_clean_500(server: Server) -> None:
    """The body (with Content-Length) was produced whole, but close() failed: 500."""
    log = assert_clean_500(server, "/close-raises")
    assert log.count(SECRET) == 1


@pytest.mark.live
def test_close_that_raises_after_an_unsized_body_is_a_visible_failure(server: Server) -> None:
    """Without Content-Length the body streams from its first chunk, so a close() that
    fails after it can only cut the response: the client can tell, the traceback is
    logged once, and the secret stays in the log.
    """
    mark = server.mark()
    response = get(server.port, "/close-raises-unsized")
    log = server.output_since(mark)
    assert b"secret" not in response.raw
    assert (response.status, response.complete) == (200, False), response
    errors = app_errors(log)
    assert errors[0] == (
        "ERROR bridge: Exception in WSGI application after the response started, "
        "GET /close-raises-unsized; the response was cut."
    ), log
    # uvicorn adds a line of its own (no traceback) when a response ends unfinished.
    assert errors[1:] in ([], [UVICORN_UNFINISHED]), log
    assert log.count(TRACEBACK) == 1
    assert log.count(SECRET) == 1
    assert_still_serving(server)


@pytest.mark.live
def test_str_body_is_a_clean_500(server: Server) -> None:
    log = assert_clean_500(server, "/str-body")
    assert "produced str as body data" in log


@pytest.mark.live
def test_raw_garbage_request_gets_a_400_and_the_server_goes_on(server: Server) -> None:
    response = request(server.port, b"GARBAGE \x00\x01 NOT-HTTP\r\n\r\n")
    assert response.status == 400
    assert_still_serving(server)


# -- logging ------------------------------------------------------------------------------


@pytest.mark.live
def test_app_exception_is_logged_once_and_never_reaches_the_client(server: Server) -> None:
    log = assert_clean_500(server, "/raise")
    assert log.count(SECRET) == 1
    assert f"RuntimeError: {SECRET}" in log


@pytest.mark.live
def test_failure_after_headers_is_cut_and_logged_once(server: Server) -> None:
    """Once the headers are out, a failure cuts the response; the client sees it cut."""
    mark = server.mark()
    response = get(server.port, "/fail-after-headers")
    log = server.output_since(mark)
    assert (response.status, response.complete) == (200, False)
    assert b"secret" not in response.raw
    assert log.count(TRACEBACK) == 1
    assert log.count(SECRET) == 1
    errors = app_errors(log)
    assert errors[0] == (
        "ERROR bridge: Exception in WSGI application after the response started, "
        "GET /fail-after-headers; the response was cut."
    ), log
    # uvicorn adds a line of its own (no traceback) when a response ends unfinished.
    assert errors[1:] in ([], [UVICORN_UNFINISHED]), log
    assert_still_serving(server)


@pytest.mark.live
def test_client_disconnect_is_not_an_error(server: Server) -> None:
    """A client that abandons a large download is routine: nothing at WARNING or above."""
    mark = server.mark()
    before = server.stats()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /download?seed=1&size=8388608 HTTP/1.1\r\nHost: t\r\n\r\n")
            received = sock.recv(65536)
            assert received.startswith(b"HTTP/1.1 200 ")
    log = server.output_since(mark, settle=0.5)
    after = server.stats()
    assert [line for line in log.splitlines() if line.startswith(("ERROR", "WARNING"))] == []
    assert after["open"] == 0, after  # every abandoned body was closed
    assert after["closed"] - before["closed"] == 4  # the three, and the first /stats
    assert_still_serving(server)
