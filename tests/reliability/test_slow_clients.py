"""Slow clients do not pin threads: 400 of them against 8 threads, and a normal request still flies.

200 clients download a 256 KiB response through a tiny socket receive buffer, a few
bytes every 100 ms; 200 more upload a 64 KiB body a few bytes every 100 ms. Both fit
bridge's 1 MiB buffers, so each holds a coroutine and a socket, never a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

import pytest

from .apps import MAX_THREADS
from .conftest import Server, ServerFactory, raise_nofile_limit

pytestmark = pytest.mark.live

READERS = 200
UPLOADERS = 200
RESPONSE_SIZE = 256 * 1024
UPLOAD_SIZE = 64 * 1024
TRICKLE = 64  # bytes per step, each way
STEP = 0.1  # seconds between steps
RCVBUF = 4096  # the readers' socket receive buffer (the kernel may round it up)
SETTLE_TIMEOUT = 10.0  # for every reader to be answered
PROBES = 6
PROBE_EVERY = 0.5  # seconds; the probes span 3 s, long enough for slow bodies to build up
PROBE_LIMIT = 1.0  # seconds for a normal request among the slow clients
# The server's socket send buffer. Loopback autotuning would otherwise let the kernel
# take the whole 256 KiB response at once, and no design could be told from another.
SERVER_SNDBUF = 4096


@dataclass
class Crowd:
    """The slow clients' shared state."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0  # readers whose status line has arrived
    uploading: int = 0  # uploaders that have sent their head and some body
    received: list[int] = field(default_factory=list)  # bytes per reader, at the end
    sockets: list[socket.socket] = field(default_factory=list)


async def open_socket(port: int, crowd: Crowd, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    crowd.sockets.append(sock)
    if rcvbuf is not None:
        # Before connect, so the window the client advertises is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def slow_reader(port: int, crowd: Crowd) -> None:
    loop = asyncio.get_running_loop()
    sock = await open_socket(port, crowd, RCVBUF)
    target = f"/download?seed=3&size={RESPONSE_SIZE}&cl=1"
    await loop.sock_sendall(sock, f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    received = b""
    total = 0
    while not crowd.stop.is_set():
        chunk = await loop.sock_recv(sock, TRICKLE)
        if not chunk:
            break
        if total < 16:
            received += chunk
            if received.startswith(b"HTTP/1.1 200 ") and total < 16 <= len(received):
                crowd.answered += 1
        total += len(chunk)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(crowd.stop.wait(), STEP)
    crowd.received.append(total)


async def slow_uploader(port: int, crowd: Crowd) -> None:
    loop = asyncio.get_running_loop()
    sock = await open_socket(port, crowd)
    head = f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {UPLOAD_SIZE}\r\n\r\n"
    await loop.sock_sendall(sock, head.encode())
    body = b"u" * UPLOAD_SIZE
    sent = 0
    while not crowd.stop.is_set() and sent < UPLOAD_SIZE - TRICKLE:
        await loop.sock_sendall(sock, body[sent : sent + TRICKLE])
        sent += TRICKLE
        if sent == TRICKLE:
            crowd.uploading += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(crowd.stop.wait(), STEP)


async def probe(port: int) -> float:
    """Time one normal request on a fresh connection."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"pong"), response
    return time.monotonic() - started


async def crowd_and_probe(
    server: Server,
) -> tuple[Crowd, list[float], int, dict[str, int]]:
    """Start the crowd, wait until every client is busy, then time normal requests."""
    port = server.port
    crowd = Crowd()
    tasks = [asyncio.create_task(slow_reader(port, crowd)) for _ in range(READERS)]
    tasks += [asyncio.create_task(slow_uploader(port, crowd)) for _ in range(UPLOADERS)]
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (crowd.answered < READERS or crowd.uploading < UPLOADERS) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        answered, uploading = crowd.answered, crowd.uploading
        assert answered == READERS, f"only {answered} slow readers were answered"
        assert uploading == UPLOADERS, f"only {uploading} slow uploaders got going"
        timings = []
        for _ in range(PROBES):
            timings.append(await probe(port))
            await asyncio.sleep(PROBE_EVERY)
        threads = server.ps().num_threads()
        stats = await asyncio.wait_for(asyncio.to_thread(server.stats), PROBE_LIMIT)
    finally:
        crowd.stop.set()
        # A reader that was never answered waits in recv: cancel what does not stop.
        _, pending = await asyncio.wait(tasks, timeout=2 * STEP + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in crowd.sockets:
            sock.close()
    for task in tasks:
        task.result()
    return crowd, timings, threads, stats


def test_slow_clients_do_not_stop_a_normal_request(start_server: ServerFactory) -> None:
    raise_nofile_limit()
    server = start_server("slow", "--http", "httptools", sndbuf=SERVER_SNDBUF)
    base_threads = server.ps().num_threads()

    crowd, timings, threads, stats = asyncio.run(crowd_and_probe(server))

    assert max(timings) < PROBE_LIMIT, timings
    # Every slow reader's response was handed over whole: no iterable is still open.
    assert stats["open"] == 0, stats
    assert threads <= base_threads + MAX_THREADS, (threads, base_threads)
    # The readers really were slow: none got near the whole response.
    assert max(crowd.received) < RESPONSE_SIZE // 2, max(crowd.received)
    # No slow upload was handed to the application, complete or not.
    assert server.read_records() == []
    print(
        f"\nprobes {', '.join(f'{t * 1000:.0f} ms' for t in timings)} among {READERS} slow "
        f"readers and {UPLOADERS} slow uploaders; threads {base_threads}->{threads}"
    )
