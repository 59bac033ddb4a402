"""A bounded fault-and-load run under uvicorn: zero wrong answers, and no resources lost.

``REQUESTS`` requests from ``CONNECTIONS`` concurrent keep-alive connections, mixing
normal downloads and uploads (every body checked by sha256), failing views, failures
after the headers, downloads and uploads the client abandons half way, and garbage
request lines. Every complete response must be byte-exact and every failure visible to
its client as a failure; afterwards the server's threads, file descriptors and RSS must
be back near where they were after a warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .apps import MAX_THREADS, payload
from .conftest import ServerFactory, parse_response, request

pytestmark = pytest.mark.live

REQUESTS = 20_000
WARMUP = 2_000
CONNECTIONS = 64
DEADLINE = 60.0  # seconds for the measured run; the test fails past it
REQUEST_TIMEOUT = 15.0  # one response; a hang is a wrong answer

# Resource margins after the run, against the values after the warm-up.
FD_MARGIN = 10
RSS_MARGIN = 30 * 1024 * 1024

# Response sizes around the 64 KiB buffers of ``apps.load``: whole handoffs below,
# streams with backpressure above.
SIZES = [0, 1, 100, 4096, 16 * 1024, 65 * 1024, 200 * 1024]
EXPECTED = {size: hashlib.sha256(payload(size, size)).hexdigest() for size in SIZES}
UPLOAD_SIZES = [0, 10, 8 * 1024, 60 * 1024, 100 * 1024, 300 * 1024]
UPLOADS = {size: random.Random(size).randbytes(size) for size in UPLOAD_SIZES}

# The mix, in parts per hundred.
MIX = {
    "download": 58,
    "upload": 12,
    "raise": 6,
    "fail_after_headers": 4,
    "abort_download": 6,
    "abort_upload": 8,
    "malformed": 6,
}
SERVER_ERROR = b"Internal Server Error\n"
UVICORN_UNFINISHED = "ERROR uvicorn.error: ASGI callable returned without completing response."


CHUNK_SIZE = 64 * 1024
KEEP_SENDING = 2.0  # seconds a refused client goes on sending its body


class Truncated(Exception):
    """The connection ended before the response's framing was complete."""


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """Read one response, raising ``Truncated`` if its body is cut short."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Truncated(f"no complete head: {exc.partial[:80]!r}") from None
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    try:
        if b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise Truncated(f"status {status}: body cut short ({exc!r})") from None
    return Reply(status, headers, body)


class Driver:
    """Runs a plan of requests over keep-alive connections and tallies every outcome."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.uploads_ok = 0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, limit=1024 * 1024)

    async def worker(self, plan: Iterator[tuple[str, int]]) -> None:
        reader, writer = await self.connect()
        try:
            for kind, size in plan:
                try:
                    keep = await asyncio.wait_for(
                        self.one(kind, size, reader, writer), REQUEST_TIMEOUT
                    )
                except (TimeoutError, asyncio.TimeoutError):
                    self.wrong.append(f"{kind} {size}: no answer within {REQUEST_TIMEOUT} s")
                    keep = False
                except (Truncated, ConnectionError) as exc:
                    self.wrong.append(f"{kind} {size}: {exc!r}")
                    keep = False
                if not keep:
                    writer.close()
                    await _closed(writer)
                    reader, writer = await self.connect()
        finally:
            writer.close()
            await _closed(writer)

    async def one(
        self, kind: str, size: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Make one exchange; return whether the connection may be used again."""
        if kind == "download":
            target = f"/download?seed={size}&size={size}" + ("&cl=1" if size % 2 else "")
            writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            reply = await read_reply(reader)
            if reply.status != 200 or hashlib.sha256(reply.body).hexdigest() != EXPECTED[size]:
                self.wrong.append(f"download {size}: {reply.status}, {len(reply.body)} bytes")
            self.outcomes["download ok"] += 1
            return True
        if kind == "upload":
            body = UPLOADS[size]
            writer.write(
                f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + body
            )
            reply = await read_reply(reader)
            expected = {"sha256": hashlib.sha256(body).hexdigest(), "size": size}
            if reply.status != 200 or json.loads(reply.body) != expected:
                self.wrong.append(f"upload {size}: {reply.status} {reply.body[:200]!r}")
            self.outcomes["upload ok"] += 1
            self.uploads_ok += 1
            return True
        if kind == "raise":
            writer.write(b"GET /raise HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = await read_reply(reader)
            if reply.status != 500 or reply.body != SERVER_ERROR:
                self.wrong.append(f"raise: {reply.status} {reply.body[:200]!r}")
            self.outcomes["500 seen"] += 1
            return True
        if kind == "fail_after_headers":
            writer.write(b"GET /fail-after-headers?size=131072 HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                reply = await read_reply(reader)
            except Truncated:
                self.outcomes["truncation seen"] += 1
                return False
            self.wrong.append(f"fail_after_headers looked complete: {reply.status}")
            return False
        if kind == "abort_download":
            writer.write(f"GET /download?seed=7&size={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            await reader.read(64 * 1024)
            self.outcomes["download abandoned"] += 1
            return False
        if kind == "abort_upload":
            writer.write(
                f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()
                + UPLOADS[size][: size // 2]
            )
            await writer.drain()
            self.outcomes["upload abandoned"] += 1
            return False
        if kind == "malformed":
            garbage_reader, garbage_writer = await self.connect()
            try:
                garbage_writer.write(b"GARBAGE \x00\x01 NOT-HTTP\r\n\r\n")
                reply = await read_reply(garbage_reader)
                if reply.status != 400:
                    self.wrong.append(f"malformed: {reply.status}")
                self.outcomes["400 seen"] += 1
            finally:
                garbage_writer.close()
                await _closed(garbage_writer)
            return True
        raise AssertionError(kind)


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def make_plan(count: int, seed: int) -> list[tuple[str, int]]:
    """A deterministic shuffled mix of ``count`` requests."""
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    plan = []
    for kind in kinds:
        if kind == "download":
            size = rng.choices(SIZES, weights=[2, 2, 6, 6, 3, 2, 1])[0]
        elif kind == "upload":
            size = rng.choice(UPLOAD_SIZES)
        elif kind == "abort_download":
            size = 4 * 1024 * 1024  # far larger than the buffers: it streams
        elif kind == "abort_upload":
            size = rng.choice([8 * 1024, 300 * 1024])  # buffered, and streamed
        else:
            size = 0
        plan.append((kind, size))
    return plan


async def drive(port: int, plan: list[tuple[str, int]], deadline: float) -> Driver:
    driver = Driver(port)
    shared = iter(plan)  # each worker takes the next item; one event loop, no lock needed
    workers = [asyncio.create_task(driver.worker(shared)) for _ in range(CONNECTIONS)]
    done, pending = await asyncio.wait(workers, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a driver bug must fail the test, not vanish
    if pending:
        driver.wrong.append(f"{len(pending)} connections still busy at the {deadline} s deadline")
    return driver


def settle(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (resources drain a moment after clients close)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_load_with_faults_loses_nothing(start_server: ServerFactory, parser: str) -> None:
    """20,000 mixed requests and faults: every answer exact, resources back to the start."""
    server = start_server("load", "--http", parser)
    process = server.ps()
    base_threads = process.num_threads()

    warm = asyncio.run(drive(server.port, make_plan(WARMUP, seed=1), DEADLINE))
    assert warm.wrong == []
    settle(lambda: server.stats()["open"] == 0)
    before = server.stats()
    fds_before = process.num_fds()
    rss_before = process.memory_info().rss

    started = time.monotonic()
    driver = asyncio.run(drive(server.port, make_plan(REQUESTS, seed=2), DEADLINE))
    elapsed = time.monotonic() - started

    assert driver.wrong == [], f"{len(driver.wrong)} wrong answers, e.g. {driver.wrong[:5]}"
    assert sum(driver.outcomes.values()) == REQUESTS, driver.outcomes
    assert elapsed < DEADLINE

    # Every iterable closed exactly once; no upload handed over short.
    settle(lambda: server.stats()["open"] == 0)
    after = server.stats()
    assert after["open"] == 0, after
    assert after["double_close"] == 0, after
    assert after["uploads_short"] == 0, after
    assert after["uploads_complete"] - before["uploads_complete"] == driver.uploads_ok

    settle(lambda: process.num_fds() <= fds_before + FD_MARGIN)
    threads, fds, rss = process.num_threads(), process.num_fds(), process.memory_info().rss
    assert threads <= base_threads + MAX_THREADS, (threads, base_threads)
    assert fds <= fds_before + FD_MARGIN, (fds, fds_before)
    assert rss <= rss_before + RSS_MARGIN, (rss, rss_before)

    # Each failure is logged once with its traceback, and nothing else is an error:
    # not the abandoned downloads and uploads, not the garbage (uvicorn warns of it).
    log = server.output()
    failures = sum(
        run.outcomes["500 seen"] + run.outcomes["truncation seen"] for run in (warm, driver)
    )
    cuts = warm.outcomes["truncation seen"] + driver.outcomes["truncation seen"]
    errors = Counter(line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL")))
    assert log.count("Traceback (most recent call last)") == failures
    bridge_errors = sum(n for line, n in errors.items() if line.startswith("ERROR bridge:"))
    assert bridge_errors == failures, errors.most_common(5)
    # uvicorn adds one line of its own (no traceback) for each response ended unfinished.
    others = {line: n for line, n in errors.items() if not line.startswith("ERROR bridge:")}
    assert others in ({}, {UVICORN_UNFINISHED: cuts}), others
    print(
        f"\n{REQUESTS} requests, {CONNECTIONS} connections, {elapsed:.1f} s "
        f"({REQUESTS / elapsed:.0f}/s); outcomes {dict(driver.outcomes)}; "
        f"threads {base_threads}->{threads}, fds {fds_before}->{fds}, "
        f"RSS {rss_before / 2**20:.1f}->{rss / 2**20:.1f} MiB"
    )


def test_body_limits_answer_413(start_server: ServerFactory) -> None:
    """Past ``max_body_size`` (4 MiB here): 413 from the Content-Length before any body
    is read, and 413 while a chunked body streams; nothing reaches the app as complete."""
    server = start_server("load", "--http", "httptools")
    declared = request(
        server.port, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n"
    )
    assert (declared.status, declared.body) == (413, b"Request Entity Too Large\n")
    # A chunked body has no length to check first: the limit holds while it streams,
    # and the refused client must not be able to go on sending (an endless body).
    chunk = b"%x\r\n" % CHUNK_SIZE + b"c" * CHUNK_SIZE + b"\r\n"
    answer = b""
    answered_at: float | None = None
    deadline = time.monotonic() + 20
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while time.monotonic() < deadline:
                if answered_at is None and select.select([sock], [], [], 0)[0]:
                    while not parse_response(answer).complete:
                        answer += sock.recv(65536)
                    answered_at = time.monotonic()
                if answered_at is not None and time.monotonic() - answered_at > KEEP_SENDING:
                    break
                sock.sendall(chunk)
            still_reading = True
        except OSError:
            still_reading = False
            # The server closed while this client was still sending: as curl does, read
            # the answer that arrived before the close (it stays in the socket's queue).
            with contextlib.suppress(OSError):
                while not parse_response(answer).complete:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
    streamed = parse_response(answer)
    assert (streamed.status, streamed.body) == (413, b"Request Entity Too Large\n")
    assert not still_reading, f"the server read the refused body for {KEEP_SENDING} s after 413"
    assert streamed.header(b"connection") == b"close", streamed.headers
    stats = server.stats()
    assert (stats["uploads_complete"], stats["uploads_short"]) == (0, 0)


def test_overload_gets_503_with_retry_after_at_once(start_server: ServerFactory) -> None:
    """Beyond ``max_threads + max_pending`` (2 + 4), requests get 503 quickly, not a queue."""
    server = start_server("overload", "--http", "httptools")

    async def burst() -> list[tuple[int, bytes | None, float]]:
        async def one() -> tuple[int, bytes | None, float]:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
                reply = await asyncio.wait_for(read_reply(reader), REQUEST_TIMEOUT)
            finally:
                writer.close()
                await _closed(writer)
            return reply.status, reply.headers.get(b"retry-after"), time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(20)))

    results = asyncio.run(burst())
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) + len(refused) == 20, results
    assert 2 <= len(served) <= 6, results  # never more than the pool and its queue hold
    assert all(retry == b"1" for _, retry, _ in refused)
    assert max(elapsed for _, _, elapsed in refused) < 0.5  # before any request finished
