"""One request suite, run through bridge under every ASGI server (see docs/compatibility.md)."""

from __future__ import annotations

import hashlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import ROOT_PATH, SPECS, STOP_TIMEOUT, LiveServer, run_server

pytestmark = pytest.mark.live

MIB = 1024 * 1024
BIG = 10 * MIB
# The same bytes as suite_app.payload: a test checks every byte the app streams.
DOWNLOAD_SEED = 3333
DISCONNECT_CHUNK = 1024
CLOSE_WITHIN = 1.0  # seconds from the client's close to the app's close()
# Every other server closes a cut response's connection within milliseconds.
CUT_TIMEOUT = 2.0
DAPHNE_KEEPS_CUT_RESPONSES_OPEN = (
    "daphne 4.2 never closes the connection of a response that the application left "
    "unfinished after http.response.start (no ASGI message makes it abort one); "
    "see docs/compatibility.md."
)


def expect_cut(request: pytest.FixtureRequest, server: LiveServer) -> None:
    if server.spec.name == "daphne":
        request.applymarker(pytest.mark.xfail(strict=True, reason=DAPHNE_KEEPS_CUT_RESPONSES_OPEN))


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# -- raw HTTP/1.1, where a client library would hide what the server sent --------------


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def raw_request(target: str, method: str = "GET", extra: str = "", close: bool = False) -> bytes:
    lines = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
    if close:
        lines += "Connection: close\r\n"
    return (lines + "\r\n").encode("latin-1")


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read a response head; return its status, its headers (lowercased) and any extra bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"The connection closed before the response head was complete: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def read_to_close(
    sock: socket.socket, data: bytes = b"", timeout: float = 5.0
) -> tuple[bytes, bool]:
    """Read until the server closes the connection; return the bytes and whether it closed."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except TimeoutError:
        return data, False


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; return its bytes and whether the last (empty) chunk arrived."""
    body = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return body, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, rest.startswith(b"\r\n")
        if len(rest) < size + 2:
            return body + rest[:size], False
        body += rest[:size]
        data = rest[size + 2 :]


def then_ping(server: LiveServer, first: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``first``, read its head, then ``GET /ping`` on the same connection.

    Returns the first response's status and headers and every byte after its head:
    for a response without a body these must be exactly the ping response.
    """
    with connect(server) as sock:
        sock.sendall(first)
        status, headers, rest = read_head(sock)
        sock.sendall(raw_request("/ping", close=True))
        after, closed = read_to_close(sock, rest)
    assert closed, f"The server kept the connection open after Connection: close: {after!r}"
    return status, headers, after


def assert_is_pong(data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:200]
    assert body == b"pong", data[:200]


# -- bodies --------------------------------------------------------------------------


def test_upload_with_content_length(client: httpx.Client) -> None:
    data = payload(BIG, seed=1)
    report = echo(client.post("/upload", content=data))
    assert report == {
        "size": BIG,
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_length": str(BIG),
        "transfer_encoding": None,
    }


def test_chunked_upload(client: httpx.Client) -> None:
    data = payload(BIG, seed=2)

    def pieces() -> Iterator[bytes]:
        for offset in range(0, len(data), 100_000):  # not a power of two, on purpose
            yield data[offset : offset + 100_000]

    report = echo(client.post("/upload", content=pieces()))
    assert report == {
        "size": BIG,
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_length": None,
        "transfer_encoding": "chunked",
    }


def test_upload_cut_short_raises_in_the_app(live_server: LiveServer, tmp_path: Path) -> None:
    """A client that leaves mid-body makes ``wsgi.input`` raise, never end early."""
    marker = tmp_path / "outcome"
    sent = 2 * MIB  # of 4 MiB declared: past the part bridge receives before the app runs
    with connect(live_server) as sock:
        head = raw_request(
            "/upload-outcome?marker=" + quote(str(marker)),
            method="POST",
            extra=f"Content-Length: {4 * MIB}\r\n",
        )
        sock.sendall(head + payload(sent, seed=4))
        time.sleep(0.2)  # let the app start reading before the client goes
    if live_server.spec.whole_body_first:
        # The application is only called once the whole body is in, so never here.
        time.sleep(1.0)
        assert not marker.exists()
        return
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    outcome, size = marker.read_text().split()
    assert outcome == "ClientDisconnected"
    assert int(size) <= sent


def test_streamed_download(client: httpx.Client) -> None:
    response = client.get("/download", params={"size": str(BIG)})
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    expected = payload(BIG, DOWNLOAD_SEED)
    assert len(response.content) == BIG
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_first_chunk_arrives_before_the_second_is_produced(
    client: httpx.Client, tmp_path: Path
) -> None:
    flag = tmp_path / "first-chunk-received"
    with client.stream("GET", "/slow", params={"flag": str(flag)}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        # The app is now waiting for this file; it only exists once chunk 1 is here.
        flag.touch()
        rest = b"".join(chunks)
    assert first == b"first\n"
    assert rest == b"second:seen\n"


# -- responses without a body -------------------------------------------------------


def test_head_has_the_headers_of_get_and_no_body(
    live_server: LiveServer, client: httpx.Client
) -> None:
    get = client.get("/page")
    assert get.status_code == 200
    assert get.content.startswith(b"<!doctype html>")
    status, head_headers, after = then_ping(live_server, raw_request("/page", method="HEAD"))
    assert status == 200
    get_headers = {k: v for k, v in get.headers.items() if k not in ("date", "server")}
    head_headers = {k: v for k, v in head_headers.items() if k not in ("date", "server")}
    assert head_headers == get_headers
    assert_is_pong(after)


def test_204_has_no_body(live_server: LiveServer) -> None:
    status, headers, after = then_ping(live_server, raw_request("/no-content"))
    assert status == 204
    assert headers["x-done"] == "yes"
    assert "transfer-encoding" not in headers
    assert headers.get("content-length", "0") == "0"
    assert_is_pong(after)


def test_304_has_no_body(live_server: LiveServer) -> None:
    conditional = raw_request("/conditional", extra='If-None-Match: "page-v1"\r\n')
    status, headers, after = then_ping(live_server, conditional)
    assert status == 304
    assert headers["etag"] == '"page-v1"'
    assert "transfer-encoding" not in headers
    assert_is_pong(after)


# -- the request environ --------------------------------------------------------------


def test_non_ascii_path_and_query_string(client: httpx.Client) -> None:
    environ = echo(client.get("/caf%C3%A9?q=caf%C3%A9&x=%FF+y"))
    # PEP 3333: the UTF-8 bytes of the path, one latin-1 character each.
    assert environ["PATH_INFO"] == "/caf\u00c3\u00a9"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["QUERY_STRING"] == "q=caf%C3%A9&x=%FF+y"


def test_path_with_bytes_that_are_not_utf8(client: httpx.Client) -> None:
    environ = echo(client.get("/%FF/x"))
    assert environ["PATH_INFO"] == "/\xff/x"


def test_duplicate_headers_cookies_and_underscores(client: httpx.Client) -> None:
    headers = [
        ("X-Dup", "a"),
        ("X-Dup", "b"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("X-Under", "dashed"),
        ("X_Under", "spoof"),
    ]
    environ = echo(client.get("/headers", headers=headers))
    # Joined with "," as gunicorn joins them (RFC 9110 5.3 allows either); Cookie with "; ".
    assert environ["HTTP_X_DUP"] == "a,b"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    # The underscored name would land on the same key; it is dropped, not merged.
    assert environ["HTTP_X_UNDER"] == "dashed"
    assert [key for key in environ if "UNDER" in key] == ["HTTP_X_UNDER"]


def test_root_path(server_name: str, tmp_path: Path) -> None:
    spec = SPECS[server_name]
    # What the client (or the proxy in front of uvicorn) asks for to reach /x of the app.
    target = ROOT_PATH + "/x" if spec.root_path_in_url else "/x"
    with (
        run_server(server_name, tmp_path, root_path=ROOT_PATH) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        environ = echo(client.get(target + "?y=1"))
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (ROOT_PATH, "/x")
    assert environ["QUERY_STRING"] == "y=1"


# -- errors -------------------------------------------------------------------------


def test_error_before_headers_is_a_clean_500(client: httpx.Client) -> None:
    response = client.get("/error/before-headers")
    assert response.status_code == 500
    assert response.headers["content-length"] == str(len(response.content))
    assert b"secret" not in response.content
    assert b"RuntimeError" not in response.content
    assert client.get("/ping").text == "pong"


def test_error_after_headers_cuts_the_response(
    request: pytest.FixtureRequest, live_server: LiveServer, tmp_path: Path
) -> None:
    expect_cut(request, live_server)
    flag = tmp_path / "first-chunk-received"
    with connect(live_server) as sock:
        sock.sendall(raw_request("/error/after-headers?flag=" + quote(str(flag))))
        status, headers, data = read_head(sock)
        while b"partial" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"The connection closed before the first chunk: {data!r}"
            data += chunk
        flag.touch()  # now the app raises
        data, closed = read_to_close(sock, data, timeout=CUT_TIMEOUT)
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in headers
    body, complete = dechunk(data)
    assert body == b"partial\n"
    assert not complete, f"The response was ended as if complete: {data!r}"
    assert closed, f"The connection stayed open after a cut response: {data!r}"


def test_error_after_headers_is_seen_by_the_client(
    request: pytest.FixtureRequest, live_server: LiveServer, tmp_path: Path
) -> None:
    expect_cut(request, live_server)
    flag = tmp_path / "first-chunk-received"
    with (
        httpx.Client(base_url=live_server.url, timeout=CUT_TIMEOUT) as client,
        client.stream("GET", "/error/after-headers", params={"flag": str(flag)}) as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks) == b"partial\n"
        flag.touch()
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(chunks)


def test_server_keeps_serving_after_a_cut_response(live_server: LiveServer, tmp_path: Path) -> None:
    flag = tmp_path / "first-chunk-received"
    with connect(live_server) as sock:
        sock.sendall(raw_request("/error/after-headers?flag=" + quote(str(flag))))
        status, _, data = read_head(sock)
        assert status == 200
        flag.touch()
        # Most servers close at once; daphne leaves the connection open (see above).
        read_to_close(sock, data, timeout=0.5)
    with httpx.Client(base_url=live_server.url, timeout=15) as client:
        assert client.get("/ping").text == "pong"
        assert client.get("/page").content.startswith(b"<!doctype html>")


# -- disconnects and lifespan -----------------------------------------------------------


def test_client_disconnect_mid_stream_calls_close(live_server: LiveServer, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    with connect(live_server) as sock:
        sock.sendall(raw_request("/disconnect?marker=" + quote(str(marker))))
        status, _, data = read_head(sock)
        assert status == 200
        while data.count(b"d") < 2 * DISCONNECT_CHUNK:
            chunk = sock.recv(65536)
            assert chunk, "The server closed the connection before two chunks were sent."
            data += chunk
    closed_at = time.monotonic()
    while not marker.exists() and time.monotonic() - closed_at < CLOSE_WITHIN:
        time.sleep(0.01)
    assert marker.exists(), f"close() was not called within {CLOSE_WITHIN} s of the disconnect."
    produced = int(marker.read_text())
    assert 2 <= produced < 1000


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_lifespan_startup_and_shutdown(
    server_name: str, stop: signal.Signals, tmp_path: Path
) -> None:
    spec = SPECS[server_name]
    with run_server(server_name, tmp_path) as server:
        startup = server.markers / "startup"
        shutdown = server.markers / "shutdown"
        if spec.lifespan:
            # One lifespan per worker process; the first to start answered the readiness poll.
            assert 1 <= len(startup.read_text().splitlines()) <= spec.processes
        else:
            # daphne never sends lifespan events: the hooks cannot run (documented).
            assert not startup.exists()
        server.process.send_signal(stop)
        try:
            returncode = server.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{server_name} did not exit within {STOP_TIMEOUT} s of {stop.name}.")
        if spec.lifespan:
            started = len(startup.read_text().splitlines())
            assert len(shutdown.read_text().splitlines()) == started, server.output()
        else:
            assert not shutdown.exists()
        # uvicorn re-raises the signal once it has shut down cleanly, so it "dies" of it.
        assert returncode in (0, -stop), server.output()
