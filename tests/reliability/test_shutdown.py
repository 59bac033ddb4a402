"""Graceful shutdown under uvicorn: SIGTERM lets requests in flight finish, refuses new
connections, and never hands a cut-off upload to the application as if it were complete.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from .conftest import Server, ServerFactory, parse_response

pytestmark = pytest.mark.live

GRACE = 3  # uvicorn's --timeout-graceful-shutdown, in seconds
EXIT_TIMEOUT = 15.0
IN_FLIGHT = 4
BIG = 200 * 1024  # above apps.shutdown's 64 KiB request buffer: streams into the thread
SMALL = 32 * 1024  # below it: received whole before a thread is taken
# uvicorn re-raises the signal once it has shut down, so its status is -SIGTERM.
CLEAN_EXIT = (0, -signal.SIGTERM)


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=EXIT_TIMEOUT)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def refused(server: Server) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def upload_head(upload_id: str, length: int) -> bytes:
    return (
        f"POST /upload HTTP/1.1\r\nHost: t\r\nX-Upload-Id: {upload_id}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(
    start_server: ServerFactory,
) -> None:
    server = start_server("shutdown", "--timeout-graceful-shutdown", str(GRACE))
    clients = [connect(server) for _ in range(IN_FLIGHT)]
    try:
        for sock in clients:
            sock.sendall(b"GET /slow?seconds=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)  # every request is now sleeping in a thread
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(server), 2.0, "refusing new connections after SIGTERM")
        responses = [parse_response(read_all(sock)) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    assert server.process.wait(EXIT_TIMEOUT) in CLEAN_EXIT
    elapsed = time.monotonic() - started
    for response in responses:
        assert (response.status, response.complete) == (200, True), response.raw[:200]
        assert json.loads(response.body) == {"slept": True}
    assert elapsed < GRACE, f"shutdown took {elapsed:.1f} s, past the requests' own 1 s"
    errors = [line for line in server.output().splitlines() if line.startswith("ERROR")]
    assert errors == []


def test_sigterm_never_completes_a_cut_off_upload(start_server: ServerFactory) -> None:
    """Uploads still arriving when the grace period ends are failed, never completed."""
    server = start_server("shutdown", "--timeout-graceful-shutdown", str(GRACE))
    body = b"b" * BIG
    with connect(server) as whole:
        whole.sendall(upload_head("whole", BIG) + body)
        control = parse_response(read_all(whole))
    assert control.status == 200 and json.loads(control.body)["size"] == BIG

    streamed, buffered = connect(server), connect(server)
    try:
        streamed.sendall(upload_head("streamed", BIG) + body[: BIG // 2])
        buffered.sendall(upload_head("buffered", SMALL) + body[: SMALL // 2])
        wait_for(
            lambda: "streamed start 204800" in server.read_records(),
            5.0,
            "the streamed upload reaching the application",
        )
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(EXIT_TIMEOUT) in CLEAN_EXIT
        cut = [parse_response(read_all(sock)) for sock in (streamed, buffered)]
    finally:
        streamed.close()
        buffered.close()

    records = server.read_records()
    assert "whole complete 204800" in records
    assert not [r for r in records if r.startswith(("streamed complete", "streamed short"))]
    # The small body was still being received on the loop: the application never saw it.
    assert not [r for r in records if r.startswith("buffered")], records
    for response in cut:
        assert response.status != 200, response.raw[:200]
    print("\nrecords:", records)
