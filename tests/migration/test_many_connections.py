"""A thousand open live-feed clients hold no legacy thread: with eight threads, the legacy
pages keep answering promptly, and every client still receives the next new item."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest

from sample_wsgi_app import SESSION_COOKIE, load_session
from tests.migration.conftest import SECRET, SERVERS, live_server, login, raise_open_files

pytestmark = pytest.mark.live

WEBSOCKETS = 500
STREAMS = 500
OPENING_AT_ONCE = 50  # below hypercorn's listen backlog of 100
LEGACY_REQUESTS = 20
PROMPT = 1.0  # seconds a legacy page may take while the feeds are held open

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_websocket(port: int) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /ws/items HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert json.loads(await read_frame(reader)) == {"type": "ready"}
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One unmasked server frame's payload (RFC 6455 5.2), skipping pings."""
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x1:  # a text frame
            return payload


async def open_stream(port: int) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events/items HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await reader.readuntil(b"event: ready")
    return reader, writer


async def open_all(port: int) -> tuple[list[Connection], list[Connection]]:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def gated(opener: object) -> Connection:
        async with gate:
            return await opener(port)  # type: ignore[operator, no-any-return]

    sockets = await asyncio.gather(*(gated(open_websocket) for _ in range(WEBSOCKETS)))
    streams = await asyncio.gather(*(gated(open_stream) for _ in range(STREAMS)))
    return list(sockets), list(streams)


async def hold_and_check(base: str, port: int) -> list[float]:
    sockets: list[Connection] = []
    streams: list[Connection] = []
    try:
        sockets, streams = await asyncio.wait_for(open_all(port), 30)
        timings = []
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await login(http)
            for number in range(LEGACY_REQUESTS):
                started = time.perf_counter()
                page = await http.get("/items", params={"page": number % 4 + 1})
                timings.append(time.perf_counter() - started)
                assert page.status_code == 200
            token = load_session(http.cookies[SESSION_COOKIE], SECRET)["csrf_token"]
            started = time.perf_counter()
            created = await http.post(
                "/api/items", json={"title": "For all"}, headers={"X-CSRF-Token": token}
            )
            timings.append(time.perf_counter() - started)
            assert created.status_code == 201

        async def websocket_sees_it(connection: Connection) -> None:
            message = json.loads(await read_frame(connection[0]))
            assert message["item"]["title"] == "For all"

        async def stream_sees_it(connection: Connection) -> None:
            await connection[0].readuntil(b"event: item")
            assert b'"title":"For all"' in await connection[0].readuntil(b"\n\n")

        await asyncio.wait_for(
            asyncio.gather(
                *(websocket_sees_it(c) for c in sockets), *(stream_sees_it(c) for c in streams)
            ),
            20,
        )
        return timings
    finally:
        for _reader, writer in (*sockets, *streams):
            writer.close()
        for _reader, writer in (*sockets, *streams):
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_thousand_live_clients_leave_legacy_pages_prompt(server: str, tmp_path: Path) -> None:
    raise_open_files(4 * (WEBSOCKETS + STREAMS) + 256)  # both ends of each, and the rest
    with live_server(server, tmp_path / "data", log=tmp_path / "server.log") as base:
        port = int(base.rsplit(":", 1)[1])
        timings = asyncio.run(hold_and_check(base, port))
    slow = [round(t, 3) for t in timings if t > PROMPT]
    assert not slow, f"legacy requests took {slow} s with 1,000 feeds open"
