"""Message level: exact ASGI sequences for the WSGI response rules, errors and disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge
from tests.asgi import Client, http_scope

Environ = dict[str, Any]


def run(
    app: Any, scope: dict[str, Any] | None = None, client: Client | None = None, **kw: Any
) -> Client:
    client = client or Client()
    bridge = app if isinstance(app, Bridge) else Bridge(app, **kw)
    asyncio.run(client.run(bridge, scope or http_scope()))
    return client


def hello(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, ", b"world!"]


class Tracked:
    """An iterable that records how often ``close()`` was called."""

    def __init__(self, chunks: Iterable[bytes], delay: float = 0.0) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.closed = 0
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            self.produced += 1
            yield chunk

    def close(self) -> None:
        self.closed += 1


def test_list_response_is_one_start_and_one_body_with_content_length() -> None:
    # Not wrapped in the validator, whose iterator would hide that the body is a list.
    client = run(hello)
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        },
        {"type": "http.response.body", "body": b"Hello, world!"},
    ]


def test_validated_hello_world() -> None:
    client = run(validator(hello))
    assert client.status == 200 and client.body == b"Hello, world!" and client.finished


def test_generator_with_content_length() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        yield b"ab"
        yield b"cd"

    client = run(validator(app))
    # The first chunk does not reach the declared length: the body streams from it.
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")],
        },
        {"type": "http.response.body", "body": b"ab", "more_body": True},
        {"type": "http.response.body", "body": b"cd", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_single_chunk_reaching_content_length_needs_no_streaming() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hello"

    client = run(app)
    assert client.sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]},
        {"type": "http.response.body", "body": b"hello"},
    ]


def test_a_generator_without_a_length_streams_from_its_first_chunk() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""  # an empty chunk decides nothing
        for i in range(3):
            yield b"%d," % i

    client = run(validator(app))
    # The framing rule, not thread timing: what the application returned is not whole
    # in memory, so it streams, one message a chunk, with no length added.
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        },
        {"type": "http.response.body", "body": b"0,", "more_body": True},
        {"type": "http.response.body", "body": b"1,", "more_body": True},
        {"type": "http.response.body", "body": b"2,", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_an_error_before_the_first_chunk_of_a_generator_is_a_clean_500() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        raise RuntimeError("before any byte")

    client = run(app)
    assert client.status == 500 and client.body == b"Internal Server Error\n" and client.finished


def test_exc_info_in_a_generator_replaces_the_headers_until_its_first_chunk() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("X-Stale", "1")])
        try:
            raise KeyError("lookup")
        except KeyError:
            start_response("404 Not Found", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"gone"

    client = run(app)
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain")],
        },
        {"type": "http.response.body", "body": b"gone", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_a_slow_generator_streams_each_chunk_and_ends_cleanly() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"early,"
        time.sleep(0.3)
        yield b"late"

    client = run(validator(app))
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        },
        {"type": "http.response.body", "body": b"early,", "more_body": True},
        {"type": "http.response.body", "body": b"late", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_first_chunk_is_sent_before_the_second_is_produced() -> None:
    second_may_start = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        assert second_may_start.wait(5), "the first chunk was never sent"
        yield b"second"

    client = Client()
    client.on_send = lambda m: m.get("body") == b"first" and second_may_start.set()
    run(validator(app), client=client)
    assert client.body == b"firstsecond"


def test_write_callable() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    client = run(validator(app))
    assert client.body == b"written returned" and client.finished


def test_exc_info_replaces_headers_before_they_are_sent() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Stale", "1")])
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"sorry"]

    client = run(app)
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        },
        {"type": "http.response.body", "body": b"sorry"},
    ]


def test_exc_info_after_headers_reraises_and_aborts(caplog: pytest.LogCaptureFixture) -> None:
    reraised = []
    sent = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"part"
        assert sent.wait(5)
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as exc:
                reraised.append(exc)
                raise

    client = Client()
    client.on_send = lambda m: m.get("body") == b"part" and sent.set()
    asyncio.run(client.run(Bridge(app), http_scope()))
    assert reraised and client.sent[0]["status"] == 200
    assert client.body == b"part" and not client.finished
    assert "the response was cut" in caplog.text and "ValueError: late" in caplog.text


def test_error_before_headers_is_a_clean_500_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        raise RuntimeError("secret database password")

    with caplog.at_level(logging.ERROR, logger="bridge"):
        client = run(app)
    assert client.status == 500
    assert client.body == b"Internal Server Error\n"
    assert b"secret" not in b"".join(v for _, v in client.sent[0]["headers"])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "secret database password" in caplog.text


def test_error_after_headers_aborts_without_ending_the_body() -> None:
    sent = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        assert sent.wait(5)
        raise RuntimeError("mid-stream")

    client = Client()
    client.on_send = lambda m: m.get("body") == b"partial" and sent.set()
    asyncio.run(client.run(Bridge(app), http_scope()))
    # No final body message: the server closes the connection without the last chunk.
    assert client.body == b"partial" and not client.finished


@pytest.mark.parametrize("where", ["ok", "iteration", "content-length"])
def test_close_is_called_exactly_once(where: str) -> None:
    chunks = [b"aa", b"bb", b"cc"]
    body = Tracked(chunks)

    def app(environ: Environ, start_response: Any) -> Tracked:
        headers = [("Content-Length", "4")] if where == "content-length" else []
        start_response("200 OK", headers)
        if where == "iteration":
            body.chunks = [b"aa", 1]  # type: ignore[list-item]
        return body

    client = Client()
    with contextlib.suppress(Exception):
        asyncio.run(client.run(Bridge(app), http_scope()))
    assert body.closed == 1
    if where == "content-length":
        # Iteration stopped as soon as the declared length was produced.
        assert client.body == b"aabb" and body.produced == 2


def test_content_length_is_never_exceeded(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hello world"
        raise AssertionError("iteration must stop at Content-Length")

    client = run(app)
    assert client.body == b"hello" and client.finished
    assert "more than its Content-Length" in caplog.text


def test_short_body_before_headers_is_a_500_not_a_short_response() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"short"]

    assert run(app).status == 500


def test_short_streamed_body_aborts(caplog: pytest.LogCaptureFixture) -> None:
    sent = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        yield b"short"
        assert sent.wait(5)

    client = Client()
    client.on_send = lambda m: m.get("body") == b"short" and sent.set()
    asyncio.run(client.run(Bridge(app), http_scope()))
    assert not client.finished
    assert "Content-Length of 10 bytes but produced 5" in caplog.text


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Bad", "a\r\nSet-Cookie: admin=1")],
        [("X-Bad", "a\nb")],
        [("X-Bad", "caf\u00e9\u2603")],
        [("Bad Name", "x")],
        [("X-Ok", 1)],
    ],
)
def test_unsafe_headers_are_refused(headers: list[tuple[str, Any]]) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"never"]

    client = run(app)
    assert client.status == 500 and client.body == b"Internal Server Error\n"


def test_latin1_header_value_is_allowed() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Name", "caf\u00e9")])
        return [b""]

    assert run(validator(app)).headers[b"x-name"] == b"caf\xe9"


def test_hop_by_hop_headers_are_dropped() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(
            "200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked"), ("X-A", "1")]
        )
        return [b"x"]

    assert run(app).sent[0]["headers"] == [(b"x-a", b"1"), (b"content-length", b"1")]


def test_head_sends_no_body_and_keeps_the_apps_length() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]

    client = run(app, http_scope(method="HEAD"))
    assert client.sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]},
        {"type": "http.response.body", "body": b""},
    ]


def test_head_without_a_declared_length_gets_none_added() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    head = run(app, http_scope(method="HEAD"))
    assert b"content-length" not in head.headers and head.body == b""
    assert run(app).headers[b"content-length"] == b"5"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b""]

    client = run(validator(app))
    assert client.sent == [
        {"type": "http.response.start", "status": int(status[:3]), "headers": []},
        {"type": "http.response.body", "body": b""},
    ]


def test_status_without_reason_is_accepted() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("201", [])
        return [b"made"]

    assert run(app).status == 201


@pytest.mark.parametrize("status", ["OK", "2000 OK", "20 OK", "200 OK\r\nX: y", 200])
def test_bad_status_is_a_500(status: Any) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b"x"]

    assert run(app).status == 500


def test_app_that_never_calls_start_response() -> None:
    assert run(lambda environ, start_response: [b"x"]).status == 500
    assert run(lambda environ, start_response: []).status == 500


def test_str_body_is_a_500() -> None:
    def app(environ: Environ, start_response: Any) -> list[str]:
        start_response("200 OK", [])
        return ["not bytes"]

    client = run(app)
    assert client.status == 500 and b"not bytes" not in client.body


def test_close_that_raises_is_a_500() -> None:
    class Body(Tracked):
        def close(self) -> None:
            super().close()
            raise RuntimeError("close failed")

    body = Body([b"x"])

    def app(environ: Environ, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Length", "1")])
        return body

    assert run(app).status == 500 and body.closed == 1


def test_file_wrapper_iterates_the_file() -> None:
    data = os.urandom(300_000)
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()

        def app(environ: Environ, start_response: Any) -> Any:
            start_response(
                "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
            )
            return environ["wsgi.file_wrapper"](open(handle.name, "rb"), 8192)

        client = run(validator(app))
    assert client.body == data and client.finished


def test_file_wrapper_uses_pathsend_when_the_server_offers_it() -> None:
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(b"file body")
        handle.flush()
        opened: list[Any] = []

        def app(environ: Environ, start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            opened.append(open(handle.name, "rb"))  # noqa: SIM115 (closed by bridge)
            return environ["wsgi.file_wrapper"](opened[0])

        scope = http_scope(extensions={"http.response.pathsend": {}})
        client = run(app, scope)
    assert client.sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")],
        },
        {"type": "http.response.pathsend", "path": os.path.abspath(handle.name)},
    ]
    assert opened[0].closed


def test_disconnect_during_a_slow_stream_calls_close_within_300ms() -> None:
    body = Tracked([b"chunk"] * 100, delay=0.01)
    closed_at: list[float] = []

    def app(environ: Environ, start_response: Any) -> Tracked:
        start_response("200 OK", [])
        return body

    original_close = body.close

    def close() -> None:
        closed_at.append(time.monotonic())
        original_close()

    body.close = close  # type: ignore[method-assign]

    async def main() -> float:
        client = Client()
        task = asyncio.ensure_future(client.run(Bridge(app), http_scope()))
        while len(client.sent) < 3:
            await asyncio.sleep(0.005)
        gone_at = time.monotonic()
        client.disconnect()
        await task
        return gone_at

    gone_at = asyncio.run(main())
    assert body.closed == 1 and body.produced < 100
    assert closed_at[0] - gone_at < 0.3


def test_disconnect_during_upload_raises_in_the_app() -> None:
    seen: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            seen.append(exc)
            raise
        start_response("200 OK", [])
        return [b"complete?"]

    big = b"x" * (1024 * 1024)
    client = Client([big, big], disconnect=True, complete=False)
    run(app, client=client)
    assert seen and type(seen[0]).__name__ == "ClientDisconnected"
    assert client.sent == []  # nothing to answer: the client is gone


def test_large_upload_streams_to_the_app_before_it_has_arrived() -> None:
    chunk = b"u" * (256 * 1024)
    first_read = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"]
        total = 0
        while data := body.read(65536):
            total += len(data)
            first_read.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]

    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent == 4:  # 1 MiB, the request buffer: the rest only once the app reads
            while not first_read.is_set():
                await asyncio.sleep(0.005)
        sent += 1
        return {"type": "http.request", "body": chunk, "more_body": sent < 40}

    client = Client()
    bridge = Bridge(validator(app))
    asyncio.run(asyncio.wait_for(bridge(http_scope(method="POST"), receive, client.send), 10))
    # The app read the first megabyte while the other nine had not been sent.
    assert client.body == str(len(chunk) * 40).encode()


def test_a_cancelled_request_stops_even_when_middleware_replaced_wsgi_input() -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    async def main() -> None:
        task = asyncio.ensure_future(Client().run(Bridge(validator(app)), http_scope()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(main())


def test_a_streamed_body_within_the_buffer_frees_its_thread_before_a_slow_client_reads() -> None:
    # The client takes nothing until told to: the generator still runs to its end and
    # close() is called in the thread, its chunks queued for the client.
    closed = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            for _ in range(3):
                yield b"x" * 1024
        finally:
            closed.set()

    class SlowClient(Client):
        def __init__(self) -> None:
            super().__init__()
            self.reading = asyncio.Event()

        async def send(self, message: dict[str, Any]) -> None:
            await self.reading.wait()
            await super().send(message)

    bridge = Bridge(validator(app))

    async def main() -> tuple[bool, int, SlowClient]:
        client = SlowClient()
        served = asyncio.ensure_future(client.run(bridge, http_scope()))
        deadline = time.monotonic() + 10
        while not (closed.is_set() and not bridge.pool.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        freed, received = closed.is_set() and not bridge.pool.running, len(client.sent)
        client.reading.set()
        await served
        return freed, received, client

    freed, received, client = asyncio.run(main())
    assert freed and received == 0
    assert client.body == b"x" * 3072 and client.finished


@pytest.mark.parametrize("streamed", [False, True])
def test_a_served_request_leaves_no_reference_cycle(streamed: bool) -> None:
    # Objects in a cycle wait for the cyclic garbage collector, whose pauses under load
    # show in the throughput and the p99: every object of a request must go by
    # reference counting when the request is over.
    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b"]) if streamed else [b"ab"]

    # Not wrapped in the validator: its wrappers make a reference cycle of their own.
    bridge = Bridge(app)

    async def serve(count: int) -> None:
        for _ in range(count):
            client = Client()
            await client.run(bridge, http_scope("/items/7"))
            assert client.body == b"ab"

    asyncio.run(serve(3))  # threads started, caches filled
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.set_debug(gc.DEBUG_SAVEALL)
        asyncio.run(serve(20))
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage if type(o).__module__.startswith("bridge")}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert left == set()
