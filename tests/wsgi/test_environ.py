"""Pure environ building: whole-dict equality for each rule of PEP 3333 bridge implements."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import bridge.wsgi.environ as environ_module
from bridge.wsgi.environ import (
    ERRORS,
    ConflictingHeaders,
    ErrorStream,
    TooManyHeaders,
    build_environ,
    request_path,
)
from tests.asgi import http_scope

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


def test_the_header_name_cache_stays_bounded_under_endless_new_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that invents a new header name on every request must not grow the
    # translation cache; names past the bound are still translated, each time.
    monkeypatch.setattr(environ_module, "_HEADER_KEYS", {})
    for number in range(3 * environ_module._MAX_HEADER_KEYS):
        scope = http_scope(
            headers=[(f"x-probe-{number}".encode(), b"1"), (f"x_probe_{number}".encode(), b"2")]
        )
        environ = build(scope)
        assert environ[f"HTTP_X_PROBE_{number}"] == "1"
        assert sum(key.startswith("HTTP_X_PROBE") for key in environ) == 1
    assert len(environ_module._HEADER_KEYS) <= environ_module._MAX_HEADER_KEYS
    # The names cached first still translate from the cache, dropped ones included.
    assert environ_module._HEADER_KEYS[b"x-probe-0"] == "HTTP_X_PROBE_0"
    assert environ_module._HEADER_KEYS.get(b"x_probe_0", "") == ""


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


def test_content_length_beside_transfer_encoding_is_refused() -> None:
    """RFC 9112 6.1: both framings at once is how requests are smuggled; 400, not a guess."""
    scope = http_scope(
        method="POST",
        headers=[(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
    )
    with pytest.raises(ConflictingHeaders, match="both Content-Length and Transfer-Encoding"):
        build(scope)
    assert ConflictingHeaders("x").status == 400


def test_a_second_host_is_refused_whatever_its_value() -> None:
    """RFC 9112 3.2: a server MUST answer 400 to more than one Host field."""
    for second in (b"evil.example", b"good.example"):
        scope = http_scope(headers=[(b"host", b"good.example"), (b"host", second)])
        with pytest.raises(ConflictingHeaders, match=r"2 Host header fields.*send exactly one"):
            build(scope)


def test_content_lengths_that_differ_are_refused_and_equal_ones_collapse() -> None:
    differ = http_scope(
        method="POST", headers=[(b"content-length", b"3")] * 1 + [(b"content-length", b"30")]
    )
    with pytest.raises(ConflictingHeaders, match="Content-Length values that differ \\('3,30'\\)"):
        build(differ)
    listed = http_scope(method="POST", headers=[(b"content-length", b"3, 4")])
    with pytest.raises(ConflictingHeaders, match="'3, 4'"):
        build(listed)
    same = http_scope(method="POST", headers=[(b"content-length", b"3")] * 2)
    assert build(same)["CONTENT_LENGTH"] == "3"
    assert (
        build(http_scope(method="POST", headers=[(b"content-length", b"3, 3")]))["CONTENT_LENGTH"]
        == "3"
    )


def test_one_header_repeated_joins_once_to_the_same_value() -> None:
    """100 x 100 KB of one header: the same value, built with one join (not 99 copies)."""
    value = b"v" * 100_000
    scope = http_scope(headers=[(b"x-big", value)] * 100 + [(b"cookie", b"a=1")] * 3)
    environ = build(scope, max_header_count=103)
    assert environ["HTTP_X_BIG"] == ",".join([value.decode()] * 100)
    assert environ["HTTP_COOKIE"] == "a=1; a=1; a=1"


# -- the one rule for PATH_INFO: path is the authority, raw_path keeps bytes where it agrees


@pytest.mark.parametrize(
    ("scope", "script_name", "path_info"),
    [
        # A middleware stripped a proxy prefix from path; raw_path is what the client sent.
        (http_scope("/users", raw_path=b"/api/users"), "", "/users"),
        # ... and a byte that is not UTF-8 still survives below the rewritten part.
        (http_scope("/\ufffd", raw_path=b"/api/%FF"), "", "/\xff"),
        # A middleware replaced a segment in the middle: the rewritten one comes from path.
        (http_scope("/new/%FF", raw_path=b"/old/%25FF"), "", "/new/%FF"),
        (http_scope("/new/\ufffd", raw_path=b"/old/%FF"), "", "/new/\xff"),
        # Encoded slashes decode to "/" in both; the non-UTF-8 byte beside them survives.
        (http_scope("/a/b/\ufffd", raw_path=b"/a%2Fb/%FF"), "", "/a/b/\xff"),
        # Nothing agrees: path alone.
        (http_scope("/x", raw_path=b"/y"), "", "/x"),
        # raw_path with the query string in it (some servers): the query is not path.
        (http_scope("/x", raw_path=b"/x?q=1"), "", "/x"),
        # path includes root_path (uvicorn, hypercorn, granian, bridge's mounts) or not.
        (http_scope("/app/x", root_path="/app", raw_path=b"/app/x"), "/app", "/x"),
        (http_scope("/x", root_path="/app", raw_path=b"/x"), "/app", "/x"),
        # A mount's scope: root_path and path grown by the prefix, raw_path as sent.
        (http_scope("/app/v2/x", root_path="/app/v2", raw_path=b"/v2/x"), "/app/v2", "/x"),
    ],
)
def test_path_is_the_authority_and_raw_path_keeps_bytes_where_it_agrees(
    scope: dict[str, Any], script_name: str, path_info: str
) -> None:
    assert request_path(scope) == (script_name, path_info)
    environ = build(scope)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (script_name, path_info)


def test_error_stream_makes_one_record_per_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", logger="bridge.wsgi"):
        print("user", 42, file=ERRORS)  # four writes: "user", " ", "42", "\n"
        ERRORS.write("two\nlines\n")
        ERRORS.write("partial ")
        ERRORS.write("line")
        assert len(caplog.records) == 2
        ERRORS.flush()
        ERRORS.write("   \n")  # blank lines make no record
    assert [r.getMessage() for r in caplog.records] == ["user 42", "two\nlines", "partial line"]


def test_error_stream_keeps_each_threads_lines_apart(caplog: pytest.LogCaptureFixture) -> None:
    started = threading.Barrier(2)

    def write(name: str) -> None:
        started.wait()
        for n in range(50):
            ERRORS.write(name)
            ERRORS.write(f" {n}")
            ERRORS.write("\n")

    with caplog.at_level("ERROR", logger="bridge.wsgi"):
        threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    messages = sorted(r.getMessage() for r in caplog.records)
    assert messages == sorted(f"{name} {n}" for name in ("a", "b") for n in range(50))


def test_error_stream_bounds_a_line_without_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", logger="bridge.wsgi"):
        for _ in range(3):
            ERRORS.write("x" * (ErrorStream.MAX_PENDING // 2))
        ERRORS.flush()
    sizes = [len(r.getMessage()) for r in caplog.records]
    assert sizes == [ErrorStream.MAX_PENDING, ErrorStream.MAX_PENDING // 2]
