"""Websocket connections are counted as a kind of their own, and merged percentiles."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any
from wsgiref.validate import validator

from bridge import Bridge, WebSocket
from bridge.metrics.whole_server import percentile


@validator
def hello_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_each_websocket_connection_counts_once_under_its_route() -> None:
    app = Bridge(hello_wsgi)

    @app.websocket("/ws/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())

    async def connect() -> list[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket", "path": "/ws/echo", "query_string": b"", "headers": [],
            "root_path": "", "asgi": {"version": "3.0"}, "scheme": "ws", "subprotocols": [],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}):
            inbox.put_nowait(message)
        await app(scope, inbox.get, send)
        return sent

    for _ in range(3):
        sent = asyncio.run(connect())
        assert [m["type"] for m in sent] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
    assert app.metrics is not None
    routes = {(r["route"], r["kind"]): r for r in app.metrics.snapshot()["routes"]}
    assert routes == {("/ws/echo", "websocket"): routes[("/ws/echo", "websocket")]}
    assert routes[("/ws/echo", "websocket")]["requests"] == 3
    assert 'bridge_requests_total{route="/ws/echo",kind="websocket"} 3' in app.metrics.prometheus()
    app.pool.shutdown()


def test_a_websocket_that_fails_or_is_cancelled_counts_once_and_only_a_failure_as_an_error() -> (
    None
):
    app = Bridge(hello_wsgi)

    @app.websocket("/ws/fails")
    async def fails(ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("broken")

    @app.websocket("/ws/waits")
    async def waits(ws: WebSocket) -> None:
        await ws.accept()
        await asyncio.Event().wait()

    async def connect(path: str, cancel: bool) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket", "path": path, "query_string": b"", "headers": [],
            "root_path": "", "asgi": {"version": "3.0"}, "scheme": "ws", "subprotocols": [],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        task = asyncio.ensure_future(app(scope, inbox.get, send))
        while not sent:
            await asyncio.sleep(0)
        if cancel:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() == cancel
        assert app.metrics is not None
        await app.metrics.stop()

    asyncio.run(connect("/ws/fails", cancel=False))
    asyncio.run(connect("/ws/waits", cancel=True))
    assert app.metrics is not None
    routes = {(r["route"], r["kind"]): r for r in app.metrics.snapshot()["routes"]}
    failed, cancelled = routes[("/ws/fails", "websocket")], routes[("/ws/waits", "websocket")]
    assert (failed["requests"], failed["errors"]) == (1, 1)
    assert (cancelled["requests"], cancelled["errors"]) == (1, 0)
    app.pool.shutdown()


def test_percentiles_of_summed_prometheus_buckets() -> None:
    buckets = {0.1: 50.0, 0.25: 90.0, 0.5: 100.0, math.inf: 100.0}
    assert percentile(buckets, 0.5) == 0.1
    assert percentile(buckets, 0.7) == 0.1 + (0.25 - 0.1) * 20 / 40
    assert percentile(buckets, 1.0) == 0.5
    assert percentile({math.inf: 0.0}, 0.5) is None
    assert percentile({1.0: 0.0, math.inf: 2.0}, 0.5) == 1.0
