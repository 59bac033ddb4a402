"""``Bridge`` itself: the public surface, lifespan, websocket refusal and request limits."""

from __future__ import annotations

import asyncio
from typing import Any
from wsgiref.validate import validator

import pytest

import bridge
from bridge import Bridge

from .asgi import Client, http_scope

Environ = dict[str, Any]


def echo_length(environ: Environ, start_response: Any) -> list[bytes]:
    total = 0
    while chunk := environ["wsgi.input"].read(65536):
        total += len(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]


def test_public_names() -> None:
    assert bridge.__all__ == [
        "BodyError",
        "BodyTimeout",
        "BodyTooLarge",
        "Bridge",
        "Broadcast",
        "ClientDisconnected",
        "Metrics",
        "Request",
        "Shadow",
        "WebSocket",
        "WebSocketDisconnect",
    ]
    assert issubclass(bridge.ClientDisconnected, OSError)


def test_a_non_callable_is_refused_with_a_sentence() -> None:
    with pytest.raises(TypeError, match="Bridge\\(\\) needs a WSGI application"):
        Bridge("app:app")  # type: ignore[arg-type]


def lifespan(bridge_app: Bridge, *messages: str) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for kind in messages:
            inbox.put_nowait({"type": kind})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await bridge_app({"type": "lifespan"}, inbox.get, send)
        return sent

    return asyncio.run(main())


def test_lifespan_runs_sync_and_async_hooks() -> None:
    calls: list[str] = []

    async def async_start() -> None:
        calls.append("async start")

    bridge_app = Bridge(
        echo_length,
        on_startup=[lambda: calls.append("sync start"), async_start],
        on_shutdown=[lambda: calls.append("stop")],
    )
    sent = lifespan(bridge_app, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert calls == ["sync start", "async start", "stop"]


def test_failing_startup_hook_reports_startup_failed() -> None:
    def broken() -> None:
        raise RuntimeError("no database")

    sent = lifespan(Bridge(echo_length, on_startup=[broken]), "lifespan.startup")
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError('no database')"}]


def test_websocket_is_refused_cleanly() -> None:
    async def main() -> list[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": []}
        await Bridge(echo_length)(scope, inbox.get, send)
        return sent

    assert asyncio.run(main()) == [{"type": "websocket.close", "code": 1000}]


def post(bridge_app: Bridge, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> Client:
    client = Client(chunks)
    asyncio.run(client.run(bridge_app, http_scope(method="POST", headers=headers)))
    return client


def test_declared_length_over_max_body_size_is_413_before_reading() -> None:
    client = Client([b"x" * 10])
    asyncio.run(
        client.run(
            Bridge(validator(echo_length), max_body_size=5),
            http_scope(method="POST", headers=[(b"content-length", b"10")]),
        )
    )
    assert client.status == 413
    assert client.inbox.qsize() == 1  # the body was never received


def test_chunked_body_over_max_body_size_is_413_and_closes_the_connection() -> None:
    client = post(Bridge(validator(echo_length), max_body_size=25), [b"x" * 10] * 3, [])
    assert client.status == 413
    # Otherwise the server would read and discard an endless chunked body.
    assert client.headers[b"connection"] == b"close"


def test_streamed_body_over_max_body_size_is_413_from_the_app() -> None:
    # Past request_buffer_size the body streams, and the limit is met inside read().
    bridge_app = Bridge(validator(echo_length), max_body_size=100_000, request_buffer_size=10_000)
    client = post(bridge_app, [b"x" * 10_000] * 20, [])
    assert client.status == 413 and client.headers[b"connection"] == b"close"


def test_body_at_the_limit_is_accepted() -> None:
    client = post(Bridge(validator(echo_length), max_body_size=30), [b"x" * 10] * 3, [])
    assert client.status == 200 and client.body == b"30"


def test_too_many_headers_is_431() -> None:
    client = Client()
    headers = [(b"x-dup", b"1")] * 5000
    asyncio.run(client.run(Bridge(validator(echo_length)), http_scope(headers=headers)))
    assert client.status == 431


def test_shutdown_waits_for_a_cancelled_requests_thread() -> None:
    import threading
    import time

    finished: list[str] = []

    def slow(environ: Environ, start_response: Any) -> list[bytes]:
        time.sleep(0.3)
        finished.append("app")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    bridge_app = Bridge(validator(slow), on_shutdown=[lambda: finished.append("hook")])

    async def main() -> None:
        task = asyncio.ensure_future(Client().run(bridge_app, http_scope()))
        await asyncio.sleep(0.05)
        task.cancel()  # as a server does past its graceful timeout
        with pytest.raises(asyncio.CancelledError):
            await task
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "lifespan.shutdown"})

        async def send(message: dict[str, Any]) -> None:
            return None

        await bridge_app({"type": "lifespan"}, inbox.get, send)

    asyncio.run(main())
    assert finished == ["app", "hook"]
    assert not any(t.is_alive() for t in threading.enumerate() if t in bridge_app.pool.threads)


def test_mounted_apps_get_the_lifespan_events() -> None:
    events: list[str] = []

    async def with_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            kind = message["type"].split(".")[-1]
            events.append(f"v2 {kind}")
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return

    async def without_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")

    bridge_app = Bridge(echo_length, on_startup=[lambda: events.append("bridge startup")])
    bridge_app.mount("/v2", with_lifespan)
    bridge_app.mount("/old", without_lifespan)
    sent = lifespan(bridge_app, "lifespan.startup", "lifespan.shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert events == ["bridge startup", "v2 startup", "v2 shutdown"]


def test_a_mounted_app_that_fails_to_start_fails_the_startup() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    bridge_app = Bridge(echo_length)
    bridge_app.mount("/v2", broken)
    (sent,) = lifespan(bridge_app, "lifespan.startup")
    assert sent["type"] == "lifespan.startup.failed"
    assert 'mounted at "/v2" failed to start: no database' in sent["message"]


def test_the_path_is_derived_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under a root path every layer needs the slow derivation (SCRIPT_NAME stripped at
    # a segment boundary): the pages, the routes, the mounts, the metrics and the
    # environ all take it from the dispatch, so it runs once per request.
    from bridge.wsgi import environ as environ_module

    derived: list[str] = []
    real = environ_module.request_path

    def counted(scope: dict[str, Any]) -> tuple[str, str]:
        derived.append(scope["path"])
        return real(scope)

    monkeypatch.setattr(environ_module, "request_path", counted)
    app = Bridge(validator(echo_length), dashboard_path="/_bridge/")

    @app.route("/items/<int:item_id>", methods=["GET"])
    def item(request: bridge.Request, item_id: int) -> str:
        return f"item {item_id} at {request.script_root}{request.path}"

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    app.mount("/v2", mounted)
    answers = []
    for path in ("/app/items/7", "/app/legacy", "/app/v2/x"):
        client = Client()
        asyncio.run(client.run(app, http_scope(path, root_path="/app")))
        answers.append((client.status, client.body))
    assert answers == [
        (200, b"item 7 at /app/items/7"),
        (200, b"0"),
        (200, b"/app/v2/x"),
    ]
    assert derived == ["/app/items/7", "/app/legacy", "/app/v2/x"]
