"""``bridge.shadow``: the legacy app answers, the view runs in its shadow and is compared."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import threading
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.validate import validator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.shadow.compare import REDACTED
from bridge.shadow.runner import RequestTee, ResponseCapture, Shadow, replay
from tests.asgi import Client, http_scope
from tests.browser import browser_fixture, page_fixture
from tests.servers import uvicorn_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Page

Environ = dict[str, Any]
ITEMS = {
    1: {"id": 1, "title": "Tea", "owner": "ada"},
    2: {"id": 2, "title": "Milk", "owner": "bob"},
}


class Legacy:
    """A legacy JSON app: /items/<id> as JSON (404 when missing), /orders/<id>, /big a large body,
    /block waits for ``release``; it records every request it was given (unless
    ``record`` is False). Every response has a Content-Length, so bridge frames it the
    same way (whole) whatever the threads' timing."""

    def __init__(self, record: bool = True) -> None:
        self.seen: list[dict[str, Any]] = []
        self.record = record
        self.release = threading.Event()

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        body = b"".join(iter(lambda: environ["wsgi.input"].read(65536), b""))
        path = environ["PATH_INFO"]
        if self.record:
            self.seen.append({"path": path, "method": environ["REQUEST_METHOD"], "body": body})
        if path == "/block":
            self.release.wait(10)
        status, headers = "200 OK", [("Content-Type", "application/json")]
        if path == "/big":
            data = b"x" * 100_000
            headers = [("Content-Type", "text/plain")]
        elif path.startswith("/items/") and path[7:].isdigit() and int(path[7:]) in ITEMS:
            data = json.dumps(ITEMS[int(path[7:])]).encode()
            headers.append(("Set-Cookie", "session=legacy-secret; HttpOnly"))
        elif path.startswith("/orders/"):
            data = json.dumps({"order": path[8:], "status": "open"}).encode()
            headers.append(("Set-Cookie", "session=legacy-secret; HttpOnly"))
        else:
            status, data = "404 Not Found", b'{"error": "not found"}'
        start_response(status, [*headers, ("Content-Length", str(len(data)))])
        return [data]


def make(record: bool = True, **options: Any) -> tuple[Bridge, Legacy]:
    legacy = Legacy(record)
    return Bridge(validator(legacy), **options), legacy


def json_view(change: Callable[[dict[str, Any]], dict[str, Any]] = dict) -> Any:
    async def item(request: Request, item_id: int) -> Response:
        if item_id not in ITEMS:
            return Response('{"error":"not found"}', status=404, mimetype="application/json")
        data = change(dict(ITEMS[item_id]))
        return Response(json.dumps(data), mimetype="application/json")

    return item


async def request(app: Bridge, path: str, **scope: Any) -> Client:
    body = scope.pop("body", b"")
    client = Client([body])
    await client.run(app, http_scope(path, **scope))
    return client


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def counts(app: Bridge, index: int = 0) -> dict[str, int]:
    stats = app.shadows.routes[index]
    return {
        "matched": stats.matched,
        "mismatched": stats.mismatched,
        "failed": stats.failed,
        "skipped": stats.skipped,
    }


# -- comparing -----------------------------------------------------------------------------


def test_an_identical_view_matches_on_every_request() -> None:
    app, legacy = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(ready_after=5))(json_view())

    async def go() -> None:
        for item_id in (1, 2, 3, 1, 2):
            await request(app, f"/items/{item_id}")
        await app.shadows.idle()

    run(go())
    assert counts(app) == {"matched": 5, "mismatched": 0, "failed": 0, "skipped": 0}
    stats = app.shadows.routes[0]
    assert stats.streak == 5 and stats.ready
    assert len(legacy.seen) == 5, "the legacy app ran once per request"


def test_a_view_that_differs_in_one_field_reports_exactly_that_field() -> None:
    app, _ = make()
    upper = json_view(lambda item: {**item, "title": item["title"].upper()})
    shadow = Shadow(show_bodies=True, headers=("content-type", "set-cookie"))
    app.route("/items/<int:item_id>", methods=["GET"], shadow=shadow)(upper)

    async def go() -> None:
        for item_id in (1, 2, 3):
            await request(app, f"/items/{item_id}")
        await app.shadows.idle()

    run(go())
    assert counts(app) == {"matched": 1, "mismatched": 2, "failed": 0, "skipped": 0}
    stats = app.shadows.routes[0]
    # One kind of difference, counted twice, shown by its latest example.
    ((kind),) = stats.snapshot()["kinds"]
    assert (kind["kind"], kind["count"], kind["outcome"]) == (
        "header set-cookie; body $.title",
        2,
        "mismatch",
    )
    assert kind["latest"]["differences"] == [
        {"where": "header set-cookie", "legacy": REDACTED, "shadow": "(absent)"},
        {"where": "body $.title", "legacy": '"Milk"', "shadow": '"MILK"'},
    ]
    assert kind["latest"]["path"] == "/items/2"
    # The legacy Set-Cookie is kept in the report only as a redacted value.
    report = json.dumps(stats.mismatches)
    assert "legacy-secret" not in report and REDACTED in report
    assert stats.streak == 1 and not stats.ready


def test_a_mismatch_resets_the_streak_to_ready() -> None:
    app, _ = make()
    differs_for_2 = json_view(lambda item: item if item["id"] == 1 else {**item, "title": "?"})
    app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(ready_after=2))(differs_for_2)

    async def go() -> list[bool]:
        ready = []
        for item_id in (1, 1, 2, 1):
            await request(app, f"/items/{item_id}")
            await app.shadows.idle()
            ready.append(app.shadows.routes[0].ready)
        return ready

    assert run(go()) == [False, True, False, False]
    assert app.shadows.routes[0].streak == 1


# -- the client's response is the legacy one -----------------------------------------------


def raising_view(request: Request, item_id: int) -> Response:
    raise RuntimeError("the shadow view is broken")


async def cookie_view(request: Request, item_id: int) -> Response:
    response = Response("different", status=201, headers={"Set-Cookie": "shadow=1"})
    response.set_cookie("other", "2")
    return response


@pytest.mark.parametrize("view", [json_view(), raising_view, cookie_view])
def test_the_client_gets_byte_identical_responses_with_shadowing_on_and_off(view: Any) -> None:
    requests: list[dict[str, Any]] = [
        {"path": "/items/1"},
        {"path": "/items/2", "query_string": b"fields=all"},
        {"path": "/items/2", "method": "HEAD"},
        {"path": "/items/9"},
        {"path": "/items/1", "headers": [(b"cookie", b"session=abc")]},
        {"path": "/items/1", "method": "POST", "body": b"title=x"},  # not shadowed: legacy
        {"path": "/other"},
    ]
    off, _ = make()
    on, _ = make()
    on.route("/items/<int:item_id>", methods=["GET"], shadow=True)(view)

    async def go(app: Bridge) -> list[list[Any]]:
        sent = []
        for spec in requests:
            sent.append((await request(app, **spec)).sent)
        await app.shadows.idle()
        return sent

    assert run(go(on)) == run(go(off))
    stats = on.shadows.routes[0]
    assert stats.matched + stats.mismatched + stats.failed == 5  # GET and HEAD only


def test_a_raising_view_counts_as_failed_and_the_client_gets_the_legacy_answer() -> None:
    app, _ = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(raising_view)

    async def go() -> Client:
        client = await request(app, "/items/1")
        await app.shadows.idle()
        return client

    client = run(go())
    assert client.status == 200 and json.loads(client.body) == ITEMS[1]
    assert counts(app) == {"matched": 0, "mismatched": 0, "failed": 1, "skipped": 0}
    (failure,) = app.shadows.routes[0].failures
    assert failure["path"] == "/items/1"
    assert failure["error"] == "The view raised RuntimeError: the shadow view is broken"
    ((kind),) = app.shadows.routes[0].snapshot()["kinds"]
    assert (kind["outcome"], kind["kind"], kind["count"]) == ("failure", "RuntimeError", 1)


def test_a_broken_shadow_view_logs_once_not_once_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(raising_view)

    async def go() -> None:
        for _ in range(20):
            await request(app, "/items/1")
            await app.shadows.idle()
        await request(app, "/nowhere/%s")  # a legacy request: its logging is untouched

    with caplog.at_level("INFO", logger="bridge"):
        run(go())
    assert app.shadows.routes[0].failed == 20
    shadow_records = [r for r in caplog.records if "shadow run" in r.getMessage()]
    assert len(shadow_records) == 1
    message = shadow_records[0].getMessage()
    assert "/items/<int:item_id>" in message and "the client got the legacy response" in message
    assert shadow_records[0].exc_info is not None  # the traceback, once


def test_the_client_response_completes_before_the_shadow_view_finishes() -> None:
    app, _ = make()
    gate = asyncio.Event()
    started: list[float] = []

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def slow(request: Request, item_id: int) -> Response:
        started.append(item_id)
        await gate.wait()
        return Response(json.dumps(ITEMS[item_id]), mimetype="application/json")

    async def go() -> None:
        client = await request(app, "/items/1")
        assert client.finished and client.status == 200
        await asyncio.sleep(0)
        # The client is done; the shadow run is still going, uncounted.
        assert app.shadows.running == 1 and started == [1]
        assert counts(app) == {"matched": 0, "mismatched": 0, "failed": 0, "skipped": 0}
        gate.set()
        await app.shadows.idle()

    run(go())
    assert counts(app)["matched"] == 1 and app.shadows.running == 0


def test_a_view_past_its_timeout_is_a_failure() -> None:
    app, _ = make()

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(timeout=0.05))
    async def stuck(request: Request, item_id: int) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def go() -> Client:
        client = await request(app, "/items/1")
        await app.shadows.idle()
        return client

    assert run(go()).status == 200
    assert counts(app)["failed"] == 1
    assert "did not answer within 0.05 s" in app.shadows.routes[0].failures[0]["error"]


def test_the_view_sees_the_same_request_and_its_cookies_are_dropped() -> None:
    app, legacy = make()
    seen: list[dict[str, Any]] = []

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    def item(request: Request, item_id: int) -> Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "cookie": request.cookies.get("session"),
                "agent": request.headers.get("User-Agent"),
                "body": request.get_data(),
            }
        )
        response = Response(json.dumps(ITEMS[item_id]), mimetype="application/json")
        response.set_cookie("session", "from-the-shadow")
        return response

    headers = [(b"cookie", b"session=abc"), (b"user-agent", b"probe/1"),
               (b"content-length", b"5")]  # fmt: skip

    async def go() -> Client:
        client = await request(app, "/items/1", query_string=b"a=1", headers=headers, body=b"hello")
        await app.shadows.idle()
        return client

    client = run(go())
    assert seen == [
        {"method": "GET", "path": "/items/1", "query": b"a=1", "cookie": "abc",
         "agent": "probe/1", "body": b"hello"},
    ]  # fmt: skip
    assert legacy.seen[0]["body"] == b"hello"
    assert client.headers[b"set-cookie"] == b"session=legacy-secret; HttpOnly"
    assert b"from-the-shadow" not in json.dumps([repr(m) for m in client.sent]).encode()


def test_a_view_in_the_legacy_middleware_can_be_shadowed() -> None:
    app, _ = make()

    def middleware(inner: Any) -> Any:
        def wrapped(environ: Environ, start_response: Any) -> Any:
            environ["legacy.user"] = "ada"
            return inner(environ, start_response)

        return validator(wrapped)

    @app.route("/items/<int:item_id>", methods=["GET"], middleware=middleware, shadow=True)
    async def item(request: Request, item_id: int) -> Response:
        data = {**ITEMS[item_id], "owner": request.environ["legacy.user"]}
        return Response(json.dumps(data), mimetype="application/json")

    async def go() -> None:
        await request(app, "/items/1")
        await request(app, "/items/2")
        await app.shadows.idle()

    run(go())
    assert counts(app) == {"matched": 1, "mismatched": 1, "failed": 0, "skipped": 0}


# -- safe methods only, unless opted in ----------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "named"), [(["GET", "POST"], "POST"), (None, "every method"), (["PUT"], "PUT")]
)
def test_an_unsafe_method_is_refused_without_the_opt_in(methods: Any, named: str) -> None:
    app, _ = make()
    with pytest.raises(ValueError, match=f"for {named} as well as the legacy") as error:
        app.route("/items/<int:item_id>", methods=methods, shadow=True)(json_view())
    assert "shadow=Shadow(unsafe=True)" in str(error.value)
    assert app.routes == [] and app.shadows.routes == []


def test_safe_methods_are_shadowed_and_other_methods_go_to_the_legacy_app_alone() -> None:
    app, legacy = make()
    calls: list[str] = []

    @app.route("/items/<int:item_id>", methods=["GET", "OPTIONS"], shadow=True)
    async def item(request: Request, item_id: int) -> Response:
        calls.append(request.method)
        return Response(json.dumps(ITEMS[item_id]), mimetype="application/json")

    async def go() -> None:
        for method in ("GET", "HEAD", "OPTIONS", "POST", "DELETE"):
            await request(app, "/items/1", method=method)
        await app.shadows.idle()

    run(go())
    assert calls == ["GET", "HEAD", "OPTIONS"]
    assert [seen["method"] for seen in legacy.seen] == ["GET", "HEAD", "OPTIONS", "POST", "DELETE"]


def test_with_the_opt_in_an_unsafe_method_is_shadowed_with_its_body() -> None:
    app, legacy = make()
    bodies: list[bytes] = []

    @app.route("/items/<int:item_id>", methods=["POST"], shadow=Shadow(unsafe=True))
    async def item(request: Request, item_id: int) -> Response:
        bodies.append(request.get_data())  # a dry run: reads, never writes
        return Response(json.dumps(ITEMS[item_id]), mimetype="application/json")

    async def go() -> None:
        for chunk in (b"a=1", b"b=" + b"2" * 5000):
            client = Client([chunk[:100], chunk[100:]])
            await client.run(app, http_scope("/items/1", method="POST"))
        await app.shadows.idle()

    run(go())
    assert bodies == [b"a=1", b"b=" + b"2" * 5000]
    assert [seen["body"] for seen in legacy.seen] == bodies
    assert counts(app)["matched"] == 2


# -- the budget ----------------------------------------------------------------------------


def test_past_max_shadows_requests_are_answered_by_legacy_alone_and_counted() -> None:
    app, legacy = make(max_shadows=2)
    gate = asyncio.Event()

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def slow(request: Request, item_id: int) -> Response:
        await gate.wait()
        return Response(json.dumps(ITEMS[item_id]), mimetype="application/json")

    async def go() -> list[Client]:
        clients = [await request(app, "/items/1") for _ in range(200)]
        assert app.shadows.running == 2
        gate.set()
        await app.shadows.idle()
        return list(clients)

    clients = run(go())
    assert all(c.status == 200 and c.finished for c in clients)
    assert len(legacy.seen) == 200
    assert counts(app) == {"matched": 2, "mismatched": 0, "failed": 0, "skipped": 198}
    assert app.shadows.routes[0].skips == {"budget": 198}


def test_under_a_concurrent_burst_shadow_runs_never_exceed_max_shadows() -> None:
    # Threads enough for the whole burst: here the shadow budget is what holds them back
    # (with fewer, every shadow is skipped for busy threads, as the next test shows).
    app, _ = make(record=False, max_shadows=3, max_threads=64)
    gate = asyncio.Event()
    seen: list[int] = []

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def slow(request: Request, item_id: int) -> Response:
        seen.append(app.shadows.running)
        await gate.wait()
        return Response(json.dumps(ITEMS[item_id]), mimetype="application/json")

    async def go() -> list[Client]:
        clients = await asyncio.gather(*(request(app, f"/items/{1 + i % 2}") for i in range(60)))
        gate.set()
        await app.shadows.idle()
        return list(clients)

    clients = run(go())
    assert all(c.status == 200 and c.finished for c in clients)
    assert len(seen) == 3 and max(seen) <= 3  # three views ran, never more at once
    assert counts(app) == {"matched": 3, "mismatched": 0, "failed": 0, "skipped": 57}
    assert app.shadows.routes[0].skips == {"budget": 57}


def test_no_shadow_starts_while_every_thread_is_busy() -> None:
    app, legacy = make(max_threads=2)
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(json_view())

    async def go() -> None:
        blockers = [asyncio.ensure_future(request(app, "/block")) for _ in range(2)]
        while app.pool.in_flight < 2:
            await asyncio.sleep(0.001)
        waiting = asyncio.ensure_future(request(app, "/items/1"))  # queued for a thread
        await asyncio.sleep(0.01)
        legacy.release.set()
        await asyncio.gather(*blockers, waiting)
        assert waiting.result().status == 200
        await request(app, "/items/2")  # threads free again
        await app.shadows.idle()

    run(go())
    assert counts(app) == {"matched": 1, "mismatched": 0, "failed": 0, "skipped": 1}
    assert app.shadows.routes[0].skips == {"threads": 1}


def test_no_shadow_starts_while_the_event_loop_lags() -> None:
    app, _ = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(json_view())
    assert app.metrics is not None
    app.metrics.loop_lag = 0.5  # what the probe would read on a loop that is stalling

    async def go() -> None:
        await request(app, "/items/1")
        app.metrics.loop_lag = 0.0  # type: ignore[union-attr]
        await request(app, "/items/1")
        await app.shadows.idle()

    run(go())
    assert counts(app) == {"matched": 1, "mismatched": 0, "failed": 0, "skipped": 1}
    assert app.shadows.routes[0].skips == {"loop": 1}


def test_bodies_over_the_capture_limit_are_skipped_and_the_client_gets_all() -> None:
    app, _ = make()
    app.route("/big", methods=["GET"], shadow=Shadow(max_body=1000))(lambda request: "x")
    app.route("/items/<int:item_id>", methods=["POST"], shadow=Shadow(unsafe=True, max_body=10))(
        json_view()
    )

    async def go() -> list[Client]:
        big = await request(app, "/big")
        post = await request(app, "/items/1", method="POST", body=b"a" * 11)
        await app.shadows.idle()
        return [big, post]

    big, post = run(go())
    assert big.body == b"x" * 100_000 and post.status == 200
    assert app.shadows.routes[0].skips == {"response_too_large": 1}
    assert app.shadows.routes[1].skips == {"request_too_large": 1}


def test_a_sampling_rate_shadows_that_share_of_requests() -> None:
    app, legacy = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=0.25)(json_view())
    draws = iter([0.1, 0.3, 0.9, 0.24, 0.5, 0.26, 0.0, 0.99])
    app.shadows.sample = lambda: next(draws)

    async def go() -> None:
        for _ in range(8):
            await request(app, "/items/1")
        await app.shadows.idle()

    run(go())
    assert counts(app)["matched"] == 3 and app.shadows.routes[0].unsampled == 5
    assert len(legacy.seen) == 8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "above 0 and at most 1"),
        (1.5, "above 0 and at most 1"),
        ("yes", "takes True, a sampling rate"),
    ],
)
def test_bad_shadow_values_are_refused_with_a_sentence(value: Any, message: str) -> None:
    app, _ = make()
    with pytest.raises((ValueError, TypeError), match=message):
        app.route("/items/<int:item_id>", methods=["GET"], shadow=value)(json_view())
    with pytest.raises(TypeError, match=r"write headers=\('etag',\)"):
        Shadow(headers="etag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_shadows must be 0 or more"):
        make(max_shadows=-1)


def test_a_normaliser_that_raises_is_a_failure() -> None:
    app, _ = make()

    def broken(body: Any) -> Any:
        raise KeyError("at")

    # Other bytes (keys reversed), so the bodies are decoded and normalised.
    reordered = json_view(lambda item: dict(reversed(list(item.items()))))
    app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(normalise=broken))(reordered)

    async def go() -> None:
        await request(app, "/items/1")
        await app.shadows.idle()

    run(go())
    assert "The normaliser raised KeyError" in app.shadows.routes[0].failures[0]["error"]


def test_shutdown_cancels_the_shadow_runs_still_going() -> None:
    app, _ = make()

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def stuck(request: Request, item_id: int) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def go() -> list[Any]:
        await request(app, "/items/1")
        assert app.shadows.running == 1
        lifespan = Client()
        lifespan.inbox = asyncio.Queue()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            lifespan.inbox.put_nowait({"type": kind})
        await asyncio.wait_for(app({"type": "lifespan"}, lifespan.receive, lifespan.send), 10)
        return lifespan.sent

    sent = run(go())
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert app.shadows.running == 0


# -- the capture wrappers -------------------------------------------------------------------


def test_the_response_capture_passes_every_message_on_and_knows_when_not_to_compare() -> None:
    async def go() -> None:
        passed: list[Any] = []

        async def send(message: Any) -> None:
            passed.append(message)

        start = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]}
        part = {"type": "http.response.body", "body": b"abc", "more_body": True}
        end = {"type": "http.response.body", "body": b"def"}
        whole = ResponseCapture(send, 6)
        for message in (start, part, end):
            await whole.send(message)
        assert passed == [start, part, end] and passed[1] is part  # the same objects
        assert whole.problem() is None and whole.captured().body == b"abcdef"

        cut = ResponseCapture(None, 100)
        await cut.send(start)
        await cut.send(part)  # and then nothing: the response was cut
        assert cut.problem() == "incomplete"

        over = ResponseCapture(None, 5)
        for message in (start, part, end):
            await over.send(message)
        assert over.problem() == "response_too_large" and over.chunks is None

        sent_file = ResponseCapture(None, 100)
        await sent_file.send(start)
        await sent_file.send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        assert sent_file.problem() == "file"

    run(go())


def test_the_request_tee_keeps_the_body_the_legacy_app_read() -> None:
    async def go() -> None:
        messages = [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": False},
        ]
        inbox = iter(messages)

        async def receive() -> Any:
            return next(inbox)

        tee = RequestTee(receive, 4)
        assert [await tee.receive(), await tee.receive()] == messages
        assert tee.problem() is None and tee.body == b"abcd"
        unread = RequestTee(receive, 4)
        assert unread.problem() == "incomplete"
        replayed = replay(b"abcd")
        assert await replayed() == {"type": "http.request", "body": b"abcd", "more_body": False}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(replayed(), 0.01)  # the shadow's client never leaves

    run(go())


# -- what is shown -------------------------------------------------------------------------


def test_the_counts_are_in_the_prometheus_text_and_the_dashboard_data() -> None:
    app, _ = make(metrics_path="/_bridge/metrics", dashboard_path="/_bridge/")
    app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(ready_after=1))(
        json_view(lambda item: {**item, "owner": "?"})
    )
    app.route("/orders/<int:order_id>", methods=["GET"], shadow=True)(lambda r, order_id: "x")

    async def go() -> tuple[Client, Client]:
        await request(app, "/items/1")
        await request(app, "/items/7")  # both 404 with the same body: a match
        await app.shadows.idle()
        return await request(app, "/_bridge/metrics"), await request(app, "/_bridge/data.json")

    metrics, data = run(go())
    families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    outcomes = {
        (s.labels["route"], s.labels["outcome"]): s.value
        for s in families["bridge_shadow_comparisons"].samples
    }
    assert outcomes[("/items/<int:item_id>", "matched")] == 1
    assert outcomes[("/items/<int:item_id>", "mismatched")] == 1
    assert outcomes[("/orders/<int:order_id>", "matched")] == 0
    ready = {s.labels["route"]: s.value for s in families["bridge_shadow_ready"].samples}
    assert ready == {"/items/<int:item_id>": 1, "/orders/<int:order_id>": 0}
    shown = {r["route"]: r for r in json.loads(data.body)["shadow"]}
    (kind,) = shown["/items/<int:item_id>"]["kinds"]
    assert kind["latest"]["differences"] == [
        {"where": "body $.owner", "legacy": "a string of 3 chars", "shadow": "a string of 1 chars"}
    ]
    assert shown["/orders/<int:order_id>"]["matched"] == 0


def test_two_shadow_routes_of_one_rule_add_up_into_one_series() -> None:
    app, _ = make()
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(json_view())
    app.route("/items/<int:item_id>", methods=["OPTIONS"], shadow=True)(json_view())

    async def go() -> None:
        for method in ("GET", "OPTIONS", "GET"):
            await request(app, "/items/1", method=method)
        await app.shadows.idle()

    run(go())
    assert app.metrics is not None
    families = {f.name: f for f in text_string_to_metric_families(app.metrics.prometheus())}
    matched = [
        s.value
        for s in families["bridge_shadow_comparisons"].samples
        if s.labels["outcome"] == "matched"
    ]
    assert matched == [3]


def test_without_shadow_routes_the_prometheus_text_has_no_shadow_series() -> None:
    app, _ = make()
    assert app.metrics is not None
    assert "bridge_shadow" not in app.metrics.prometheus()
    assert app.metrics.snapshot()["shadow"] == []


def test_memory_stays_bounded_under_ten_thousand_mismatching_requests() -> None:
    app, _ = make(record=False, metrics=False, max_shadows=8)
    mismatching = json_view(lambda item: {**item, "title": "x" * 500, "n": list(range(50))})
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(mismatching)

    async def burst(count: int) -> None:
        for start in range(0, count, 8):  # eight at a time: within max_shadows, never skipped
            await asyncio.gather(*(request(app, f"/items/{1 + (start + i) % 2}") for i in range(8)))
            await app.shadows.idle()

    async def go() -> tuple[int, int]:
        # Untraced first (tracemalloc slows every allocation several times over): the
        # kept reports fill up, caches warm. Then a traced thousand: anything kept per
        # request, even a few dozen bytes, would show as tens of KiB.
        await burst(9000)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await burst(1000)
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return before, after

    before, after = run(go())
    stats = app.shadows.routes[0]
    assert stats.mismatched == 10_000 and stats.skipped == 0
    ((kind),) = stats.kinds.values()
    assert kind.count == 10_000 and stats.store_used <= stats.config.store_bytes
    assert after - before < 32 * 1024, f"grew by {after - before} bytes"


# -- the dashboard's panel, in a real browser ------------------------------------------------

chromium = browser_fixture()
page = page_fixture()


@pytest.fixture
def served_shadows() -> Iterator[str]:
    """Two shadow routes under uvicorn in a thread: one that matches, one that does not."""
    app, _ = make(dashboard_path="/_bridge/")
    app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(ready_after=3))(json_view())

    @app.route("/orders/<int:order_id>", methods=["GET"], shadow=True)
    async def order(request: Request, order_id: int) -> Response:
        data = {"order": str(order_id), "status": "closed"}
        return Response(json.dumps(data), mimetype="application/json")

    with uvicorn_in_thread(app) as base:
        secrets = {"Cookie": "session=client-secret", "Authorization": "Bearer client-secret"}
        with httpx.Client(base_url=base, timeout=10, headers=secrets) as http:
            paths = ("/items/1", "/items/2", "/items/1", "/orders/7", "/orders/8")
            for done, path in enumerate(paths, 1):
                assert http.get(path).status_code == 200
                # The client has its answer before the shadow run starts: wait for the
                # comparison, so the runs go one at a time and report in order.
                for _ in range(500):
                    if sum(s.matched + s.mismatched for s in app.shadows.routes) == done:
                        break
                    threading.Event().wait(0.01)
        yield base


@pytest.mark.browser
def test_the_dashboard_shows_each_shadow_route_its_verdict_and_its_diffs(
    served_shadows: str, page: Page
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served_shadows + "/_bridge/")
    page.wait_for_selector("body[data-loaded='1']")
    expect(page.locator("#shadow-panel")).to_be_visible()
    items = page.locator("#shadow-routes tr[data-route='/items/<int:item_id>']")
    orders = page.locator("#shadow-routes tr[data-route='/orders/<int:order_id>']")
    expect(items.locator(".verdict")).to_have_text("ready to switch")
    expect(items.locator(".matched")).to_have_text("3")
    expect(items.locator(".streak")).to_have_text("3 / 3")
    expect(orders.locator(".verdict")).to_have_text("differs")
    expect(orders.locator(".mismatched")).to_have_text("2")
    reports = page.locator("#shadow-mismatches details.mismatch")
    expect(reports).to_have_count(1)  # two mismatches of one kind: one entry
    first = reports.first
    expect(first.locator("summary")).to_have_text(
        "2\u00d7 body $.status, latest GET /orders/8: 1 difference"
    )
    first.locator("summary").click()
    cells = first.locator("tr.difference td")
    expect(cells).to_have_text(["body $.status", "a string of 4 chars", "a string of 6 chars"])
    download = first.locator("a.download")
    with page.expect_download() as info:
        download.click()
    report = json.loads(Path(info.value.path()).read_text())
    assert report["route"] == "/orders/<int:order_id>" and report["path"] == "/orders/8"
    content = page.content()
    assert "client-secret" not in content and "legacy-secret" not in content
    assert errors == []
    if os.environ.get("BRIDGE_SHADOW_SCREENSHOT"):
        page.screenshot(path=os.environ["BRIDGE_SHADOW_SCREENSHOT"], full_page=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
