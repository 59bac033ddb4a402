"""Pure environ building: whole-dict equality for each rule of PEP 3333 bridge implements."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.environ import ERRORS, TooManyHeaders, build_environ, request_path

from .asgi import http_scope

BODY = object()


def expected(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": BODY,
        "wsgi.errors": ERRORS,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    base.update(overrides)
    return base


def build(scope: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    environ = build_environ(scope, BODY, **kwargs)
    assert environ.pop("asgi.scope") is scope
    return environ


def test_minimal_get() -> None:
    assert build(http_scope()) == expected()


def test_full_request() -> None:
    scope = http_scope(
        "/search",
        method="POST",
        query_string=b"q=caf%C3%A9&x=1",
        scheme="https",
        http_version="2",
        headers=[
            (b"host", b"example.com"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"11"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x_forwarded_for", b"6.6.6.6"),
            (b"x-forwarded-for", b"10.0.0.1"),
        ],
    )
    assert build(scope) == expected(
        REQUEST_METHOD="POST",
        PATH_INFO="/search",
        QUERY_STRING="q=caf%C3%A9&x=1",
        SERVER_PROTOCOL="HTTP/2",
        SERVER_NAME="example.com",
        SERVER_PORT="443",
        CONTENT_TYPE="application/x-www-form-urlencoded",
        CONTENT_LENGTH="11",
        HTTP_HOST="example.com",
        HTTP_ACCEPT="text/html,application/json",
        HTTP_COOKIE="a=1; b=2",
        HTTP_X_FORWARDED_FOR="10.0.0.1",
        **{"wsgi.url_scheme": "https"},
    )


def test_non_ascii_path_is_utf8_bytes_as_latin1() -> None:
    scope = http_scope("/café", raw_path=b"/caf%C3%A9")
    assert build(scope)["PATH_INFO"] == "/caf\xc3\xa9"
    # Without raw_path the decoded path is re-encoded as UTF-8.
    assert build(http_scope("/café"))["PATH_INFO"] == "/caf\xc3\xa9"


def test_invalid_utf8_escape_keeps_the_byte() -> None:
    scope = http_scope("/\ufffd/x", raw_path=b"/%FF%2Fx")
    assert build(scope)["PATH_INFO"] == "/\xff/x"


def test_raw_non_ascii_query_string_is_latin1() -> None:
    scope = http_scope("/", query_string="a=é".encode())
    assert build(scope)["QUERY_STRING"] == "a=\xc3\xa9"


@pytest.mark.parametrize(
    ("root_path", "path", "script_name", "path_info"),
    [
        # uvicorn's convention: path already includes root_path.
        ("/app", "/app/items", "/app", "/items"),
        ("/app", "/app", "/app", ""),
        # hypercorn's and daphne's convention: path does not include it.
        ("/app", "/items", "/app", "/items"),
        # /app is not a prefix of /apple.
        ("/app", "/apple", "/app", "/apple"),
        ("/app/", "/app/x", "/app", "/x"),
        ("", "/x", "", "/x"),
    ],
)
def test_root_path_strips_at_segment_boundary(
    root_path: str, path: str, script_name: str, path_info: str
) -> None:
    assert request_path(http_scope(path, root_path=root_path)) == (script_name, path_info)


def test_underscore_headers_are_dropped() -> None:
    scope = http_scope(headers=[(b"x_user", b"admin"), (b"x-user", b"alice")])
    assert build(scope)["HTTP_X_USER"] == "alice"
    scope = http_scope(headers=[(b"x_user", b"admin")])
    assert "HTTP_X_USER" not in build(scope)


def test_header_values_are_latin1_strings() -> None:
    scope = http_scope(headers=[(b"x-name", "é".encode())])
    assert build(scope)["HTTP_X_NAME"] == "\xc3\xa9"


def test_no_client_no_remote_addr_and_unix_server() -> None:
    scope = http_scope(client=None, server=("/tmp/sock", None))
    environ = build(scope)
    assert "REMOTE_ADDR" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("/tmp/sock", "80")


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [
        ("example.com:8080", "example.com", "8080"),
        ("example.com", "example.com", "80"),
        ("[::1]:9000", "[::1]", "9000"),
        ("[::1]", "[::1]", "80"),
    ],
)
def test_server_name_and_port_from_host(host: str, name: str, port: str) -> None:
    environ = build(http_scope(headers=[(b"host", host.encode())]))
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == (name, port)


def test_too_many_headers() -> None:
    headers = [(b"x-dup", b"1")] * 101
    with pytest.raises(TooManyHeaders, match="101 header fields; the limit is 100"):
        build_environ(http_scope(headers=headers), BODY)
    assert build_environ(http_scope(headers=headers), BODY, max_header_count=200)


def test_file_wrapper_is_offered() -> None:
    environ = build_environ(http_scope(), BODY, file_wrapper=dict)
    assert environ["wsgi.file_wrapper"] is dict


def test_error_stream_writes_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", logger="bridge.wsgi"):
        ERRORS.write("something broke\n")
        ERRORS.writelines(["a\n", "b\n"])
        ERRORS.flush()
    assert [r.getMessage() for r in caplog.records] == ["something broke", "a", "b"]


def test_content_length_beside_transfer_encoding_is_dropped() -> None:
    scope = http_scope(
        method="POST",
        headers=[(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
    )
    environ = build(scope)
    assert "CONTENT_LENGTH" not in environ
    assert environ["HTTP_TRANSFER_ENCODING"] == "chunked"
