"""Trickled uploads hold no thread slot: issue 23's attack against a live uvicorn.

2,100 connections each declare a 100 KB body and send one byte of it. Before the
intake budget, each took an admission slot on arrival (max_threads + max_pending =
2,080 of them) and every other request, GETs included, got 503 while no thread was
busy. Now each costs a coroutine and a share of the intake: the first max_uploads
(1,000) wait for their bodies, the rest get 503 naming max_uploads, and a GET is
answered by a free thread.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from .conftest import ServerFactory, raise_nofile_limit

pytestmark = pytest.mark.live

UPLOADS = 2100
BODY = 100_000
MAX_UPLOADS = 1000  # the default
SETTLE_TIMEOUT = 30.0  # for the refusals past max_uploads to arrive


async def trickle(port: int, sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sockets.append(sock)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    head = (f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BODY}\r\n\r\nx").encode()
    await loop.sock_sendall(sock, head)


async def refused(sock: socket.socket) -> bytes:
    """The 503 a refused upload gets (the whole response), or b"" if none comes."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        while chunk := await loop.sock_recv(sock, 4096):
            data += chunk
    except OSError:
        pass
    return data


def test_trickling_uploads_leave_gets_answered_live(start_server: ServerFactory) -> None:
    raise_nofile_limit()
    server = start_server("trickle")

    async def main() -> tuple[list[bytes], int, str]:
        sockets: list[socket.socket] = []
        try:
            for batch in range(0, UPLOADS, 100):
                await asyncio.gather(
                    *(trickle(server.port, sockets) for _ in range(batch, batch + 100))
                )
            reads = [asyncio.ensure_future(refused(sock)) for sock in sockets]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE_TIMEOUT
            done = 0
            while done < UPLOADS - MAX_UPLOADS and loop.time() < deadline:
                more, _ = await asyncio.wait(
                    [r for r in reads if not r.done()],
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                done += len(more)
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                ping = await client.get("/ping")
            answers = [r.result() for r in reads if r.done()]
            for read in reads:
                read.cancel()
            return answers, ping.status_code, ping.text
        finally:
            for sock in sockets:
                sock.close()

    answers, status, text = asyncio.run(main())
    assert status == 200, (status, text, server.output()[-2000:])
    assert len(answers) == UPLOADS - MAX_UPLOADS
    assert all(a.startswith(b"HTTP/1.1 503 ") for a in answers)
    assert all(b"max_uploads=1000 request bodies are arriving at once" in a for a in answers)
