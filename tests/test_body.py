"""``wsgi.input``: file semantics, streaming from ``receive`` with bounded memory, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bridge.body import DEFAULT_HIGH_WATER, RequestBody
from bridge.errors import BodyTooLarge, ClientDisconnected

from .asgi import Client

TEXT = b"first line\nsecond line\n\nlast without newline"


def test_read_semantics_on_a_complete_body() -> None:
    body = RequestBody(TEXT)
    assert body.read(5) == b"first"
    assert body.read(0) == b""
    assert body.readline() == b" line\n"
    assert body.readline(3) == b"sec"
    assert body.readline(100) == b"ond line\n"
    assert body.read(-1) == b"\nlast without newline"
    assert body.read() == b""
    assert body.readline() == b""


def test_read_none_and_iteration() -> None:
    assert RequestBody(TEXT).read(None) == TEXT
    assert list(RequestBody(TEXT)) == TEXT.splitlines(keepends=True)
    assert RequestBody(TEXT).readlines() == TEXT.splitlines(keepends=True)
    # readlines(hint) stops once the lines read reach the hint.
    assert RequestBody(TEXT).readlines(12) == [b"first line\n", b"second line\n"]
    assert RequestBody(TEXT).readlines(11) == [b"first line\n"]


def stream(
    chunks: list[bytes],
    reader: Callable[[RequestBody], Any],
    *,
    disconnect: bool = False,
    max_body_size: int | None = None,
) -> Any:
    """Feed ``chunks`` through ``pump`` while ``reader`` reads in a thread; return its result."""

    async def main() -> Any:
        client = Client(chunks, disconnect=disconnect, complete=not disconnect)
        body = RequestBody(complete=False)
        loop = asyncio.get_running_loop()
        pump = asyncio.ensure_future(body.pump(client.receive, max_body_size))
        try:
            return await loop.run_in_executor(None, reader, body)
        finally:
            pump.cancel()

    return asyncio.run(main())


def test_streamed_body_reads_like_a_file() -> None:
    chunks = [b"fir", b"st line\nsec", b"ond line\n", b"", b"\nlast", b" without newline"]

    def reader(body: RequestBody) -> list[bytes]:
        return [body.read(2), body.readline(), body.readline(4), *body.readlines()]

    assert stream(chunks, reader) == [
        b"fi",
        b"rst line\n",
        b"seco",
        b"nd line\n",
        b"\n",
        b"last without newline",
    ]


def test_readline_size_is_never_short_while_more_may_come() -> None:
    # A line split over several messages: readline(size) waits for size bytes.
    assert stream([b"ab", b"cd", b"ef\n"], lambda body: body.readline(5)) == b"abcde"


def test_disconnect_mid_body_raises_instead_of_a_short_body() -> None:
    def reader(body: RequestBody) -> bytes:
        return body.read()

    with pytest.raises(ClientDisconnected):
        stream([b"partial", b"more"], reader, disconnect=True)


def test_disconnect_mid_body_lets_buffered_bytes_be_read_first() -> None:
    def reader(body: RequestBody) -> tuple[bytes, str]:
        first = body.read(4)
        try:
            body.read(100)
            body.read(100)
        except ClientDisconnected as exc:
            return first, type(exc).__name__
        return first, "no error"

    async def main() -> tuple[bytes, str]:
        client = Client([b"data"], disconnect=True, complete=False)
        body = RequestBody(complete=False)
        pump = asyncio.ensure_future(body.pump(client.receive, None))
        result = await asyncio.get_running_loop().run_in_executor(None, reader, body)
        await pump
        return result

    assert asyncio.run(main()) == (b"data", "ClientDisconnected")


def test_body_past_max_body_size_raises_body_too_large() -> None:
    with pytest.raises(BodyTooLarge, match="max_body_size"):
        stream([b"x" * 10] * 5, lambda body: body.read(), max_body_size=25)


def test_streaming_holds_at_most_the_high_water_mark_ahead_of_the_reader() -> None:
    chunk = b"z" * (64 * 1024)
    count = 64  # 4 MiB in all
    peak = 0

    async def main() -> int:
        nonlocal peak
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            sent += 1
            return {"type": "http.request", "body": chunk, "more_body": sent < count}

        body = RequestBody(complete=False)
        pump = asyncio.ensure_future(body.pump(receive, None))
        started = threading.Event()
        release = threading.Event()

        def reader() -> int:
            started.set()
            release.wait(5)
            total = 0
            while data := body.read(16 * 1024):
                total += len(data)
            return total

        future = asyncio.get_running_loop().run_in_executor(None, reader)
        # While the reader does not read, the pump stops at the high-water mark.
        for _ in range(50):
            await asyncio.sleep(0.005)
        peak = body.received
        release.set()
        total = await future
        await pump
        return total

    assert asyncio.run(main()) == len(chunk) * count
    assert DEFAULT_HIGH_WATER <= peak <= DEFAULT_HIGH_WATER + len(chunk)


def test_read_n_returns_n_bytes_across_messages_until_the_end() -> None:
    # Django reads request.body with a single read(CONTENT_LENGTH).
    chunk = b"y" * (64 * 1024)
    size = 3 * DEFAULT_HIGH_WATER + 5

    def reader(body: RequestBody) -> tuple[int, int]:
        return len(body.read(size)), len(body.read(10))

    chunks = [chunk] * (size // len(chunk)) + [b"y" * (size % len(chunk))]
    assert stream(chunks, reader) == (size, 0)
