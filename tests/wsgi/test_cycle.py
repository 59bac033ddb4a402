"""The request cycle under hostile traffic: admission, stalled and large bodies, disconnects,
and framing that does not depend on thread timing. Message level, in process."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import BodyTimeout, BodyTooLarge, Bridge, Request
from tests.asgi import Client, http_scope

Environ = dict[str, Any]
MiB = 1024 * 1024


def echo_length(environ: Environ, start_response: Any) -> list[bytes]:
    total = 0
    while chunk := environ["wsgi.input"].read(65536):
        total += len(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]


def busy_or_echo_length(gate: threading.Event) -> Any:
    """An app whose ``/busy`` holds its thread until ``gate`` is set; any other path
    answers the length of its body."""

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/busy":
            gate.wait(10)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"done"]
        return echo_length(environ, start_response)

    return app


# -- admission -----------------------------------------------------------------------


class Late(Client):
    """A client whose body messages wait until ``release`` is set (a slow uploader)."""

    def __init__(self, release: asyncio.Event, chunks: Any = (b"",), **kw: Any) -> None:
        super().__init__(chunks, **kw)
        self.release = release
        self.received = 0

    async def receive(self) -> dict[str, Any]:
        await self.release.wait()
        self.received += 1
        return await super().receive()


def post(length: int) -> dict[str, Any]:
    return http_scope(method="POST", headers=[(b"content-length", str(length).encode())])


def test_bodies_still_arriving_hold_no_thread_slot_and_have_their_own_budget() -> None:
    """20 uploads whose bodies arrive late: none holds a thread slot while it waits; 15
    (max_uploads) hold the intake, the other 5 get 503 naming max_uploads at once, and
    a GET beside them is served by a free thread."""
    app = Bridge(validator(echo_length), max_threads=2, max_pending=100, max_uploads=15)

    async def main() -> list[Client]:
        release = asyncio.Event()
        clients = [Late(release, [b"late"]) for _ in range(20)]
        tasks = [asyncio.ensure_future(app(post(4), c.receive, c.send)) for c in clients]
        for _ in range(20):
            await asyncio.sleep(0.005)
        refused = [c for c in clients if c.sent]
        assert len(refused) == 5
        assert app.admission.admitted == 0 and app.admission.intake.uploads == 15
        get = Client()
        await get.run(app, http_scope())
        assert get.status == 200
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return clients

    clients = asyncio.run(main())
    refused = [c for c in clients if c.status == 503]
    assert sorted(c.status for c in clients) == [200] * 15 + [503] * 5
    for client in refused:
        assert b"max_uploads=15 request bodies are arriving at once" in client.body
        assert client.headers[b"retry-after"] == b"1"
    assert app.admission.admitted == 0 and app.admission.intake.uploads == 0
    assert app.admission.intake.reserved == 0
    app.pool.shutdown()


def test_the_bytes_bodies_may_buffer_while_arriving_are_bounded() -> None:
    app = Bridge(validator(echo_length), max_upload_memory=10_000)

    async def main() -> list[Client]:
        release = asyncio.Event()
        clients = [Late(release, [b"x" * 4000]) for _ in range(3)]
        tasks = [asyncio.ensure_future(app(post(4000), c.receive, c.send)) for c in clients]
        for _ in range(10):
            await asyncio.sleep(0.005)
        assert app.admission.intake.reserved == 8000
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return clients

    clients = asyncio.run(main())
    assert [c.status for c in clients] == [200, 200, 503]
    assert b"max_upload_memory=10000 bytes" in clients[2].body
    app.pool.shutdown()


def test_2100_trickling_uploads_leave_a_get_answered() -> None:
    """The attack from issue 23: 2,100 connections each sending a 100 KB body a byte at a
    time. With the defaults they cost coroutines and the intake, never a thread slot."""
    app = Bridge(validator(echo_length))

    async def main() -> tuple[list[Client], Client]:
        release = asyncio.Event()
        clients = [Late(release, [b"x"], complete=False) for _ in range(2100)]
        tasks = [asyncio.ensure_future(app(post(100_000), c.receive, c.send)) for c in clients]
        for _ in range(50):
            await asyncio.sleep(0.005)
        get = Client()
        await get.run(app, http_scope())
        assert app.admission.admitted == 0
        assert app.admission.intake.reserved <= 1000 * 100_000
        for client in clients:
            client.disconnect()
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return clients, get

    clients, get = asyncio.run(main())
    assert (get.status, get.body) == (200, b"0")
    refused = [c for c in clients if c.sent]
    assert len(refused) == 1100  # past max_uploads=1000, each told which budget was full
    assert all(b"max_uploads=1000" in c.body for c in refused)
    assert app.admission.intake.uploads == 0
    app.pool.shutdown()


def test_a_request_queued_for_a_thread_stops_reading_its_body() -> None:
    """Flow control: past request_buffer_size a queued upload reads nothing more (the
    server holds the client back) instead of spooling to disk while it waits."""
    gate = threading.Event()
    app = busy_or_echo_length(gate)

    bridge = Bridge(validator(app), max_threads=1, request_buffer_size=64 * 1024)

    async def main() -> tuple[Client, int]:
        busy = Client()
        holding = asyncio.ensure_future(busy.run(bridge, http_scope("/busy")))
        await asyncio.sleep(0.05)
        upload = Client([b"u" * (16 * 1024)] * 64)  # 1 MiB, every message ready at once
        uploading = asyncio.ensure_future(upload.run(bridge, post(1024 * 1024)))
        for _ in range(20):
            await asyncio.sleep(0.005)
        unread = upload.inbox.qsize()
        gate.set()
        await asyncio.gather(holding, uploading)
        return upload, unread

    upload, unread = asyncio.run(main())
    assert unread == 64 - 4  # four 16 KiB messages fill the 64 KiB buffer; then it waits
    assert (upload.status, upload.body) == (200, str(1024 * 1024).encode())
    bridge.pool.shutdown()


def test_a_refused_request_says_when_to_retry_and_closes() -> None:
    app = Bridge(validator(echo_length), max_threads=1, max_pending=0, retry_after=7)
    app.admission.admitted = 1  # as if a request held the only slot
    client = Client()
    asyncio.run(client.run(app, http_scope()))
    assert client.status == 503
    assert client.headers[b"retry-after"] == b"7" and client.headers[b"connection"] == b"close"


# -- async routes' bodies -------------------------------------------------------------


def test_a_256_mib_body_to_an_async_route_that_ignores_it_stays_small_and_never_stalls() -> None:
    app = Bridge(validator(echo_length), metrics=False)

    @app.route("/ignore", methods=["GET"])
    async def ignore(req: Request) -> str:
        return "ignored"

    chunk = b"b" * (64 * 1024)
    count = 256 * MiB // len(chunk)

    async def main() -> tuple[Client, float]:
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            sent += 1  # every message ready at once, as a fast client's would be
            return {"type": "http.request", "body": chunk, "more_body": sent < count}

        worst = 0.0
        done = False

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        ticking = asyncio.ensure_future(ticker())
        client = Client()
        await asyncio.wait_for(app(http_scope("/ignore"), receive, client.send), 120)
        done = True
        await ticking
        return client, worst

    tracemalloc.start()
    try:
        client, worst_step = asyncio.run(main())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert client.status == 200 and client.body == b"ignored"
    assert peak < 16 * MiB  # the body went to a temporary file, 1 MiB in memory at most
    assert worst_step < 0.25  # one disk write per step; receiving 256 MiB took many


def test_an_async_view_reads_a_spooled_body_lazily() -> None:
    app = Bridge(validator(echo_length), request_buffer_size=64 * 1024)
    seen: dict[str, Any] = {}

    @app.route("/upload", methods=["POST"])
    async def upload(req: Request) -> str:
        seen["spooled"] = req.environ["wsgi.input"].spooled
        data = req.stream.read()
        return str(len(data))

    chunk = b"s" * 100_000
    client = Client([chunk] * 5)
    asyncio.run(client.run(app, http_scope("/upload", method="POST")))
    assert client.body == b"500000" and seen["spooled"] is True


# -- stalled bodies -------------------------------------------------------------------


def test_stalled_uploads_past_the_buffer_free_their_threads_after_body_timeout() -> None:
    # Two clients declare 2 MiB, send 1 MiB and stall, with two threads: past
    # body_timeout their reads raise, they get 408 and a third request is served.
    reads_failed: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read(2 * MiB)
        except BodyTimeout as exc:
            reads_failed.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read"]

    bridge = Bridge(validator(app), max_threads=2, body_timeout=0.5, metrics=False)
    stall = [(b"content-length", str(2 * MiB).encode())]

    async def main() -> tuple[list[int], int, float]:
        stalled = [Client([b"x" * (256 * 1024)] * 4, complete=False) for _ in range(2)]
        tasks = [
            asyncio.ensure_future(c.run(bridge, http_scope(method="POST", headers=stall), 20))
            for c in stalled
        ]
        await asyncio.sleep(0.1)
        assert bridge.pool.running == 2  # both threads wait on the stalled bodies
        begun = time.monotonic()
        normal = Client()
        await normal.run(bridge, http_scope(method="POST"), 20)
        waited = time.monotonic() - begun
        await asyncio.gather(*tasks)
        return [c.status for c in stalled], normal.status, waited

    statuses, normal, waited = asyncio.run(main())
    assert statuses == [408, 408] and normal == 200
    assert len(reads_failed) == 2 and "body_timeout" in str(reads_failed[0])
    assert waited < 5  # the timeout (0.5 s) and a loaded machine's slack, not forever
    assert len(bridge.pool.threads) <= 2


def test_a_body_that_stalls_before_the_buffer_fills_is_408_without_a_thread() -> None:
    bridge = Bridge(validator(echo_length), body_timeout=0.2)
    client = Client([b"half"], complete=False)
    headers = [(b"content-length", b"100")]
    asyncio.run(client.run(bridge, http_scope(method="POST", headers=headers)))
    assert client.status == 408 and client.headers[b"connection"] == b"close"
    assert bridge.pool.threads == []


def test_a_body_within_the_buffer_that_is_cut_off_never_reaches_the_application() -> None:
    called: list[str] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        called.append("app")
        return echo_length(environ, start_response)

    bridge = Bridge(validator(app))
    client = Client([b"half of it"], disconnect=True, complete=False)
    headers = [(b"content-length", b"100")]
    asyncio.run(client.run(bridge, http_scope(method="POST", headers=headers)))
    assert called == [] and client.sent == [] and bridge.pool.threads == []


class Trickle(Client):
    """A client that sends ``size`` bytes of body ``every`` seconds, for ever."""

    def __init__(self, size: int, every: float) -> None:
        super().__init__()
        self.size, self.every = size, every

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(self.every)
        return {"type": "http.request", "body": b"t" * self.size, "more_body": True}


def test_a_steady_trickle_gets_408_at_body_deadline_without_reaching_the_app() -> None:
    """Each chunk comes well within body_timeout; the whole body never comes."""
    called: list[str] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        called.append("app")
        return echo_length(environ, start_response)

    bridge = Bridge(validator(app), body_timeout=5, body_deadline=0.3)
    client = Trickle(1, 0.02)
    asyncio.run(client.run(bridge, post(100_000)))
    assert client.status == 408 and client.headers[b"connection"] == b"close"
    assert b"took longer than body_deadline=0.3 s" in client.body
    assert called == [] and bridge.admission.intake.uploads == 0


def test_a_trickle_past_the_buffer_gets_408_at_body_deadline_while_the_app_reads() -> None:
    reads_failed: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read(200_000)
        except BodyTimeout as exc:
            reads_failed.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read"]

    bridge = Bridge(validator(app), request_buffer_size=16, body_timeout=5, body_deadline=0.3)
    client = Trickle(10, 0.02)
    asyncio.run(client.run(bridge, post(100_000)))
    assert client.status == 408
    assert len(reads_failed) == 1 and "0.3" in str(reads_failed[0])
    assert bridge.admission.admitted == 0
    bridge.pool.shutdown()


def test_time_queued_for_a_thread_does_not_count_against_body_deadline() -> None:
    """A body left unread while its request waited for a thread is the server's delay."""
    gate = threading.Event()
    app = busy_or_echo_length(gate)

    bridge = Bridge(validator(app), max_threads=1, request_buffer_size=16, body_deadline=0.2)

    async def main() -> Client:
        busy = Client()
        holding = asyncio.ensure_future(busy.run(bridge, http_scope("/busy")))
        await asyncio.sleep(0.05)
        upload = Client([b"x" * 16] * 4)
        uploading = asyncio.ensure_future(upload.run(bridge, post(64)))
        await asyncio.sleep(0.4)  # twice the deadline, queued behind /busy
        gate.set()
        await asyncio.gather(holding, uploading)
        return upload

    upload = asyncio.run(main())
    assert (upload.status, upload.body) == (200, b"64")
    bridge.pool.shutdown()


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_body_deadline_is_validated(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"body_deadline must be"):
        Bridge(echo_length, body_deadline=bad)


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_body_timeout_is_validated(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"body_timeout must be"):
        Bridge(echo_length, body_timeout=bad)


# -- disconnects ----------------------------------------------------------------------


def test_a_disconnect_is_seen_while_the_app_leaves_a_large_body_unread() -> None:
    # The app streams without reading its 2.5 MiB upload: the cycle still receives
    # the whole body (spooling it), so it sees the client leave.
    produced = 0
    produced_at_disconnect: list[int] = []
    closed = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            for _ in range(300):
                produced += 1
                yield b"tick\n"
                time.sleep(0.01)
        finally:
            closed.set()

    body = [b"u" * (64 * 1024)] * 40  # 2.5 MiB

    async def main() -> Client:
        client = Client(body)
        task = asyncio.ensure_future(client.run(Bridge(app), http_scope(method="POST"), 20))
        while len(client.sent) < 3:
            await asyncio.sleep(0.005)
        produced_at_disconnect.append(produced)
        client.disconnect()
        await task
        return client

    client = asyncio.run(main())
    assert closed.wait(2)
    assert produced - produced_at_disconnect[0] <= 3  # within a chunk (and a loaded step)
    assert not client.finished


# -- framing --------------------------------------------------------------------------


def two_chunks(environ: Environ, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first,"
    yield b"second"


def first_then_error(environ: Environ, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first,"
    raise RuntimeError("after the first chunk")


def test_the_same_generator_is_framed_the_same_way_300_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[set[Any], set[Any]]:
        framed, errors = set(), set()
        ok, failing = Bridge(validator(two_chunks)), Bridge(first_then_error)
        for _ in range(300):
            client = Client()
            await client.run(ok, http_scope())
            framed.add((tuple(client.sent[0]["headers"]), len(client.sent), client.body))
            client = Client()
            await client.run(failing, http_scope())
            errors.add((client.status, client.body, client.finished))
        return framed, errors

    framed, errors = asyncio.run(main())
    # Streamed from the first chunk (start, two chunks, the end), however the thread
    # and the loop interleave; the error after that chunk is always a cut response.
    assert framed == {(((b"content-type", b"text/plain"),), 4, b"first,second")}
    assert errors == {(200, b"first,", False)}


# -- the request body limit always reaches the client (issue 14) -----------------------


def test_413_reaches_the_client_even_when_the_app_catches_body_too_large() -> None:
    def forgiving(environ: Environ, start_response: Any) -> list[bytes]:
        with contextlib.suppress(BodyTooLarge):
            environ["wsgi.input"].read(1_000_000)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"all is well"]

    bridge = Bridge(validator(forgiving), max_body_size=100_000, request_buffer_size=10_000)
    client = Client([b"x" * 10_000] * 20)
    asyncio.run(client.run(bridge, http_scope(method="POST")))
    assert client.status == 413 and client.headers[b"connection"] == b"close"
    assert b"all is well" not in client.body


# -- async bodies and HTTP/1.0 (issue 17) ----------------------------------------------


def test_an_async_body_yielding_a_non_bytes_value_is_a_500_before_the_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Bridge(validator(echo_length))

    @app.route("/int")
    async def ints(req: Request) -> Response:
        async def body() -> AsyncIterator[Any]:
            yield 3

        return Response(body())

    client = Client()
    asyncio.run(client.run(app, http_scope("/int")))
    assert client.status == 500 and b"\x00" not in client.body
    assert "TypeError" in caplog.text and "produced int as body data" in caplog.text


def test_an_async_body_yielding_a_non_bytes_value_after_the_headers_is_cut() -> None:
    app = Bridge(validator(echo_length))

    @app.route("/late-int")
    async def late(req: Request) -> Response:
        async def body() -> AsyncIterator[Any]:
            yield b"fine,"
            await asyncio.sleep(0)  # the first chunk took the headers out
            yield 3

        return Response(body())

    client = Client()
    asyncio.run(client.run(app, http_scope("/late-int")))
    assert client.status == 200 and client.body == b"fine," and not client.finished


def test_an_async_iterator_streams_inside_the_legacy_middleware() -> None:
    def tagging(inner: Any) -> Any:
        def app(environ: Environ, start_response: Any) -> Any:
            environ["legacy.tag"] = "tagged"
            return inner(environ, start_response)

        return app

    app = Bridge(validator(echo_length))

    @app.route("/feed", middleware=tagging)
    async def feed(req: Request) -> Response:
        tag = req.environ["legacy.tag"]

        async def body() -> AsyncIterator[str]:
            for i in range(3):
                yield f"{tag} {i}\n"

        return Response(body(), mimetype="text/plain")

    client = Client()
    asyncio.run(client.run(app, http_scope("/feed")))
    assert client.status == 200 and client.body == b"tagged 0\ntagged 1\ntagged 2\n"


def test_a_streamed_response_to_http10_is_held_and_sent_with_a_length() -> None:
    def slow(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for part in (b"slow ", b"but ", b"whole"):
            time.sleep(0.01)  # a slow stream: held all the same
            yield part

    client = Client()
    asyncio.run(client.run(Bridge(validator(slow)), http_scope(http_version="1.0")))
    assert client.headers[b"content-length"] == b"14" and client.body == b"slow but whole"
    # The same app over HTTP/1.1 streams, with no length.
    client = Client()
    asyncio.run(client.run(Bridge(validator(slow)), http_scope()))
    assert b"content-length" not in client.headers and client.body == b"slow but whole"
