"""Single-client measurements wrk cannot make: download speed, time to first byte, peak RSS."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from .apps import SLOW_FIRST, SLOW_SECOND

MIB = 1024 * 1024
READ_BUFFER = 1 * MIB
TIMEOUT = 60.0


class CheckFailed(Exception):
    """A response had the wrong status or body: the run is invalid."""


def _connection(port: int) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def _drain(response: http.client.HTTPResponse) -> int:
    buffer = bytearray(READ_BUFFER)
    total = 0
    while n := response.readinto(buffer):
        total += n
    return total


def warm_up(port: int, path: str, count: int) -> None:
    """Send ``count`` requests and discard the answers, so code paths and pools are warm."""
    connection = _connection(port)
    try:
        for _ in range(count):
            connection.request("GET", path)
            connection.getresponse().read()
    finally:
        connection.close()


def settle(port: int, path: str, timeout: float = 120.0) -> None:
    """Wait until the server answers ``path``: requests that wrk left queued have been served.

    A server that serves one request at a time still works through a backlog of
    abandoned requests after wrk stops; the next run must not start behind them.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    finally:
        connection.close()


def download_speed(port: int, size: int, target: str = "") -> float:
    """Stream ``size`` bytes from ``/download`` (or ``target``) as fast as one client reads.

    Returns MiB/s; the status and the byte count are checked.
    """
    target = target or f"/download?{size}"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    buffer = bytearray(READ_BUFFER)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        start = time.perf_counter()
        sock.sendall(request.encode())
        n = 0
        while (end := buffer.find(b"\r\n\r\n", 0, n)) < 0:
            got = sock.recv_into(memoryview(buffer)[n:])
            if not got:
                raise CheckFailed(f"/download closed before its headers: {buffer[:n]!r}")
            n += got
        head = bytes(buffer[:end]).lower()
        if b"transfer-encoding: chunked" in head:
            total = _chunked_length(sock, buffer, n, end + 4)
        else:
            total = n - end - 4
            while got := sock.recv_into(buffer):
                total += got
        elapsed = time.perf_counter() - start
    if not head.startswith((b"http/1.0 200", b"http/1.1 200")) or total != size:
        raise CheckFailed(f"{target} gave {head[:40]!r} and {total} of {size} bytes.")
    return size / MIB / elapsed


def _chunked_length(sock: socket.socket, buffer: bytearray, n: int, pos: int) -> int:
    """Read a chunked body to its last chunk and return its length; ``buffer[pos:n]`` is read.

    Chunk data is skipped where it lies in the buffer, never copied, so this client
    is not what limits the download speed.
    """
    body = 0
    left = 0  # chunk data and its CRLF still to skip
    line = b""
    while True:
        if pos >= n:
            n = sock.recv_into(buffer)
            pos = 0
            if not n:
                raise CheckFailed(f"/download closed inside its chunked body after {body} bytes.")
        if left:
            take = min(left, n - pos)
            left -= take
            pos += take
            continue
        end = buffer.find(b"\n", pos, n)
        if end < 0:
            line += buffer[pos:n]
            pos = n
            continue
        line += buffer[pos : end + 1]
        pos = end + 1
        size = int(line.split(b";")[0].strip(), 16)
        line = b""
        if size == 0:
            return body
        body += size
        left = size + 2


def first_byte(port: int) -> float:
    """Seconds from sending ``GET /slow`` to receiving the first chunk of its body."""
    request = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(request)
        data = b""
        elapsed: float | None = None
        while chunk := sock.recv(65536):
            data += chunk
            if elapsed is None:
                head_end = data.find(b"\r\n\r\n")
                if head_end >= 0 and SLOW_FIRST in data[head_end:]:
                    elapsed = time.perf_counter() - start
    head, _, body = data.partition(b"\r\n\r\n")
    if elapsed is None or not head.startswith(b"HTTP/1.1 200") or SLOW_SECOND not in body:
        raise CheckFailed(f"/slow gave an unexpected response: {data[:200]!r}")
    return elapsed


@dataclass(frozen=True)
class Memory:
    """Resident memory of the server's processes before and during a transfer."""

    baseline_mib: float
    peak_mib: float

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.baseline_mib


class RssSampler:
    """Sums the RSS of the server's processes every 10 ms in a thread and keeps the peak."""

    def __init__(self, processes: list[psutil.Process], interval: float = 0.01) -> None:
        self.processes = processes
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = 0
        for process in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


def _upload_chunks(size: int) -> Iterator[bytes]:
    chunk = bytes(MIB)
    remaining = size
    while remaining > 0:
        n = min(remaining, MIB)
        yield chunk if n == MIB else chunk[:n]
        remaining -= n


def _transfer(port: int, size: int) -> None:
    """Upload ``size`` bytes to ``/echo`` then download ``size`` bytes, on one connection."""
    connection = _connection(port)
    try:
        connection.request(
            "POST",
            "/echo",
            body=_upload_chunks(size),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200 or answer != str(size).encode():
            raise CheckFailed(f"/echo gave status {response.status} and {answer[:100]!r}.")
        # gunicorn's sync worker closes after each response; http.client then reconnects.
        connection.request("GET", f"/download?{size}")
        response = connection.getresponse()
        total = _drain(response)
        if response.status != 200 or total != size:
            raise CheckFailed(f"/download gave status {response.status} and {total} bytes.")
    finally:
        connection.close()


def peak_memory(port: int, processes: list[psutil.Process], size: int) -> Memory:
    """Stream ``size`` bytes each way through the server while sampling its RSS."""
    _transfer(port, 4 * MIB)  # warm-up: buffers and pools reach their working size
    idle = RssSampler(processes)
    time.sleep(0.2)
    baseline = idle.sample()
    with RssSampler(processes) as sampler:
        _transfer(port, size)
    return Memory(baseline_mib=baseline / MIB, peak_mib=max(sampler.peak, baseline) / MIB)
