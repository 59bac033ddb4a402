"""``wsgi.input``: file semantics, fed while it is read, spooled past its buffer, failures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import BodyTimeout, BodyTooLarge, ClientDisconnected
from bridge.wsgi.body import DEFAULT_REQUEST_BUFFER, RequestBody

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
    error: Exception | None = None,
    buffer_size: int = DEFAULT_REQUEST_BUFFER,
) -> Any:
    """Feed ``chunks`` on the loop, one per step, while ``reader`` reads in a thread;
    then finish the body, or fail it with ``error``. Returns what the reader returned."""

    async def main() -> Any:
        body = RequestBody(complete=False, buffer_size=buffer_size)
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(None, reader, body)
        for chunk in chunks:
            body.feed(chunk)
            await asyncio.sleep(0.001)
        if error is None:
            body.finish()
        else:
            body.fail(error)  # type: ignore[arg-type]
        return await reading

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
    with pytest.raises(ClientDisconnected):
        stream([b"partial", b"more"], lambda body: body.read(), error=ClientDisconnected("gone"))


def test_a_short_read_n_raises_rather_than_look_complete() -> None:
    # Django trusts one read(CONTENT_LENGTH): 11 bytes of 100 must not come back as all.
    with pytest.raises(BodyTimeout):
        stream([b"partial", b"more"], lambda body: body.read(100), error=BodyTimeout(1))


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
        body = RequestBody(complete=False)
        body.feed(b"data")
        body.fail(ClientDisconnected("gone"))
        return await asyncio.get_running_loop().run_in_executor(None, reader, body)

    assert asyncio.run(main()) == (b"data", "ClientDisconnected")


def test_body_past_max_body_size_raises_body_too_large() -> None:
    with pytest.raises(BodyTooLarge, match="max_body_size"):
        stream([b"x" * 10] * 5, lambda body: body.read(), error=BodyTooLarge(25))


def test_past_its_buffer_the_body_spools_to_a_file_and_memory_stays_bounded() -> None:
    chunk = os.urandom(64 * 1024)
    count = 64  # 4 MiB in all, through a 256 KiB buffer
    peaks: list[int] = []

    def reader(body: RequestBody) -> bytes:
        parts = []
        while data := body.read(10_000):
            peaks.append(body.in_memory)
            parts.append(data)
        return b"".join(parts)

    assert stream([chunk] * count, reader, buffer_size=256 * 1024) == chunk * count
    assert max(peaks) <= 256 * 1024


def test_the_writer_never_waits_for_a_reader_that_does_not_read() -> None:
    # The cycle keeps receiving (and so sees a disconnect) whatever the reader does.
    body = RequestBody(complete=False, buffer_size=1024)
    for _ in range(100):
        body.feed(b"w" * 1000)
    body.finish()
    assert body.spooled and body.in_memory == 0 and body.size == 100_000
    assert body.readline(5) == b"wwwww" and len(body.read()) == 99_995
    body.close()
    assert not body.spooled and body.read() == b""


def test_read_n_returns_n_bytes_across_messages_until_the_end() -> None:
    # Django reads request.body with a single read(CONTENT_LENGTH).
    chunk = b"y" * (64 * 1024)
    size = 3 * 64 * 1024 + 5

    def reader(body: RequestBody) -> tuple[int, int]:
        return len(body.read(size)), len(body.read(10))

    chunks = [chunk] * (size // len(chunk)) + [b"y" * (size % len(chunk))]
    assert stream(chunks, reader, buffer_size=100_000) == (size, 0)


def test_readline_across_the_memory_and_file_parts() -> None:
    body = RequestBody(complete=False, buffer_size=8)
    for part in (b"abc\nde", b"fgh", b"ij\nklm"):
        body.feed(part)
    body.finish()
    assert list(body) == [b"abc\n", b"defghij\n", b"klm"]
