"""Header parity under every server: the requests gunicorn refuses get 400 and a closed
connection, whichever layer (the server's parser or bridge) sees them first."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from tests.live.conftest import LiveServer
from tests.live.test_servers import read_head, read_to_close

pytestmark = pytest.mark.live

# (name, the header lines after the request line)
REFUSED = [
    ("duplicate Host", "Host: good.example\r\nHost: evil.example\r\n"),
    (
        "Content-Length and Transfer-Encoding",
        "Host: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ),
    (
        "Content-Lengths that differ",
        "Host: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
    ),
]


# granian (hyper) removes Content-Length when Transfer-Encoding is present before
# the application sees the request, frames the body by Transfer-Encoding and closes the
# connection after the response: RFC 9112 6.1's MUST is met, but bridge never sees the
# conflict to refuse it.
GRANIAN_DROPS_CONTENT_LENGTH = ("granian", "Content-Length and Transfer-Encoding")
DAPHNE_KEEPS_REFUSED_CONNECTIONS_OPEN = (
    "daphne 4.2 (Twisted) keeps a connection open after the application's "
    "'Connection: close' and reads the next request; bridge still answers 400."
)


@pytest.mark.parametrize(("case", "head"), REFUSED, ids=[case for case, _ in REFUSED])
def test_ambiguous_requests_get_400_and_the_connection_closed(
    request: pytest.FixtureRequest, live_server: LiveServer, case: str, head: str
) -> None:
    if live_server.spec.name == "daphne" and case == "duplicate Host":
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=DAPHNE_KEEPS_REFUSED_CONNECTIONS_OPEN)
        )
    # A smuggled second request follows the body: nothing may answer it.
    body = b"5\r\nhello\r\n0\r\n\r\n" if "Transfer" in head else b"hello"
    smuggled = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    request = f"POST /upload HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body + smuggled
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(request)
        status, headers, rest = read_head(sock)
        data, closed = read_to_close(sock, rest)
    if (live_server.spec.name, case) == GRANIAN_DROPS_CONTENT_LENGTH:
        assert status == 200 and headers["connection"] == "close"
    else:
        assert status == 400, f"{case}: {status} {headers} {live_server.output()}"
    assert closed, f"{case}: the connection was kept open after a 400"
    assert b"pong" not in data, f"{case}: the smuggled request was answered"


def test_one_header_repeated_100_times_at_100_kb_leaves_others_served(
    live_server: LiveServer,
) -> None:
    """100 x 100 KB of one header: whichever layer answers, a GET beside it gets 200."""
    line = "X-Big: " + "v" * 100_000 + "\r\n"
    request = ("GET /headers HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line * 100 + "\r\n").encode()
    statuses: list[int] = []

    def hostile() -> None:
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
            try:
                sock.sendall(request)
                statuses.append(read_head(sock)[0])
            except (ConnectionResetError, BrokenPipeError, AssertionError):
                statuses.append(0)  # the server cut it: a clean refusal too

    threads = [threading.Thread(target=hostile) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert httpx.get(live_server.url + "/ping", timeout=10).text == "pong"
    for thread in threads:
        thread.join(30)
    assert len(statuses) == 4
    assert set(statuses) <= {0, 200, 400, 413, 431}, statuses
    assert httpx.get(live_server.url + "/ping", timeout=10).text == "pong"
