"""Websocket routes: accept, echo, JSON, disconnects, refusal of unknown paths, errors."""

from __future__ import annotations

import asyncio
import gc
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge, Request, WebSocket

from .test_views import legacy


def websocket_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"room=1",
        "root_path": "",
        "headers": headers or [(b"host", b"t"), (b"cookie", b"user=ada")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
    }


def converse(
    app: Bridge,
    path: str,
    incoming: list[dict[str, Any]],
    scope: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            inbox.put_nowait(message)
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope or websocket_scope(path), inbox.get, send), 5)
        return sent

    return asyncio.run(main())


CONNECT = {"type": "websocket.connect"}


def test_echo_with_path_values_query_and_cookies() -> None:
    app = Bridge(validator(legacy))

    @app.websocket("/ws/<room>")
    async def chat(ws: WebSocket, room: str) -> None:
        await ws.accept()
        user = ws.request.cookies["user"]
        async for message in ws:
            await ws.send_text(f"{user}@{room}?{ws.request.args['room']}: {message!s}")

    sent = converse(
        app,
        "/ws/lobby",
        [CONNECT, {"type": "websocket.receive", "text": "hi"}, {"type": "websocket.disconnect"}],
    )
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None},
        {"type": "websocket.send", "text": "ada@lobby?1: hi"},
    ]


def test_json_round_trip_and_close_after_the_view_returns() -> None:
    app = Bridge(validator(legacy))

    @app.websocket("/ws")
    async def once(ws: WebSocket) -> None:
        await ws.accept()
        value = await ws.receive_json()
        await ws.send_json({"got": value})

    sent = converse(app, "/ws", [CONNECT, {"type": "websocket.receive", "text": '{"a": 1}'}])
    assert sent[1:] == [
        {"type": "websocket.send", "text": '{"got":{"a":1}}'},
        {"type": "websocket.close", "code": 1000, "reason": ""},
    ]


def test_unknown_path_is_refused() -> None:
    app = Bridge(validator(legacy))

    @app.websocket("/ws")
    async def view(ws: WebSocket) -> None:
        await ws.accept()

    assert converse(app, "/elsewhere", [CONNECT]) == [{"type": "websocket.close", "code": 1000}]


def test_a_failing_view_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    app = Bridge(validator(legacy))

    @app.websocket("/ws")
    async def broken(ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("bug")

    sent = converse(app, "/ws", [CONNECT])
    assert sent[-1] == {"type": "websocket.close", "code": 1011, "reason": ""}
    assert "Exception in websocket view" in caplog.text


def test_websocket_under_a_mount_goes_to_the_mounted_app() -> None:
    app = Bridge(validator(legacy))
    seen: list[str] = []

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await receive()
        await send({"type": "websocket.accept"})

    app.mount("/v2", mounted)
    assert converse(app, "/v2/ws", [CONNECT]) == [{"type": "websocket.accept"}]
    assert seen == ["/v2/ws"]


def many_headers(count: int) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"t"), *((b"x-trace", str(n).encode()) for n in range(count - 1))]


def echo_app(max_header_count: int | None = None) -> Bridge:
    app = (
        Bridge(validator(legacy))
        if max_header_count is None
        else Bridge(validator(legacy), max_header_count=max_header_count)
    )

    @app.websocket("/ws")
    async def count(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(str(len(ws.request.headers["X-Trace"].split(","))))

    return app


def test_a_handshake_within_a_raised_max_header_count_is_accepted() -> None:
    scope = websocket_scope("/ws", many_headers(150))
    sent = converse(echo_app(300), "/ws", [CONNECT], scope)
    assert sent[:2] == [
        {"type": "websocket.accept", "subprotocol": None},
        {"type": "websocket.send", "text": "149"},
    ]


def test_a_handshake_past_max_header_count_is_closed_before_accept() -> None:
    """No exception reaches the server: a close before accept, which it answers with 403."""
    scope = websocket_scope("/ws", many_headers(150))
    assert converse(echo_app(), "/ws", [CONNECT], scope) == [
        {"type": "websocket.close", "code": 1008}
    ]


def test_a_handshake_past_max_header_count_gets_431_with_the_http_response_extension() -> None:
    scope = {
        **websocket_scope("/ws", many_headers(150)),
        "extensions": {"websocket.http.response": {}},
    }
    sent = converse(echo_app(), "/ws", [CONNECT], scope)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 431
    assert sent[1] == {
        "type": "websocket.http.response.body",
        "body": b"Request Header Fields Too Large\n",
    }
    assert len(sent) == 2


class CountedRequest(Request):
    """A request class that counts how many handshakes were turned into requests."""

    made = 0

    def __init__(self, environ: dict[str, Any]) -> None:
        super().__init__(environ)
        CountedRequest.made += 1


def test_an_idle_websocket_keeps_no_environ_until_the_view_reads_its_request() -> None:
    # The environ's checks decide the handshake, but an idle socket does not keep it:
    # it is built again if the view reads ws.request.
    app = Bridge(validator(legacy))
    read: list[str] = []

    @app.websocket("/idle")
    async def idle(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")
        await ws.receive_text()
        read.append(ws.request.cookies["user"])

    def environs() -> int:
        gc.collect()
        # type(), not isinstance(): a lazy object (Django's settings) answers __class__ itself.
        return sum(1 for o in gc.get_objects() if type(o) is dict and "wsgi.version" in o)

    async def main() -> None:
        inboxes: list[asyncio.Queue[dict[str, Any]]] = []
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        tasks = []
        before = environs()  # the module-level templates some parts of bridge keep
        for _ in range(3):
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            inbox.put_nowait(CONNECT)
            inboxes.append(inbox)
            tasks.append(asyncio.ensure_future(app(websocket_scope("/idle"), inbox.get, send)))
        while len(sent) < 6:
            await asyncio.sleep(0.01)
        assert environs() == before
        for inbox in inboxes:
            inbox.put_nowait({"type": "websocket.receive", "text": "hi"})
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert read == ["ada"] * 3

    asyncio.run(main())


def test_an_idle_websocket_costs_at_most_its_budget_over_plain_asgi() -> None:
    # What bridge keeps for an open, silent websocket beyond the same feed in plain ASGI,
    # counted by tracemalloc over 300 sockets: about 1.5 KiB on CPython 3.11 (the
    # WebSocket, the view's frames and the metrics' Measured); 5.1 KiB while it kept the
    # environ, 1.8 while the metrics kept a frame.
    from tests.idle_budget import kib_per_connection

    bridge, plain = kib_per_connection("ws", "feeds.asgi_feed(apps.asgi_micro)")
    assert plain < bridge < plain + 1.8, f"{bridge:.2f} KiB against {plain:.2f} KiB"


def test_the_handshake_request_is_built_only_when_the_view_reads_it() -> None:
    # An idle socket that never reads ws.request holds no Request (its headers and
    # cookies parsed); the environ is still built, since its checks decide the handshake,
    # and dropped.
    app = Bridge(validator(legacy), request_class=CountedRequest)
    seen: list[tuple[str, int, bool]] = []

    @app.websocket("/quiet")
    async def quiet(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")

    @app.websocket("/reads/<int:n>")
    async def reads(ws: WebSocket, n: int) -> None:
        await ws.accept()
        first = ws.request
        seen.append((first.cookies["user"], first.path_params["n"], ws.request is first))

    CountedRequest.made = 0
    assert converse(app, "/quiet", [CONNECT])[1] == {"type": "websocket.send", "text": "hello"}
    assert CountedRequest.made == 0
    converse(app, "/reads/7", [CONNECT])
    assert CountedRequest.made == 1
    assert seen == [("ada", 7, True)]
