"""``bridge.mount_limits``: a mounted ASGI app gets bridge's header-count and body-size
limits too (431, 413), instead of the raw scope and ``receive``."""

from __future__ import annotations

import asyncio
from typing import Any
from wsgiref.validate import validator

from bridge import Bridge
from bridge._types import Message
from tests.asgi import Client, http_scope


def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"legacy"]


class Upload:
    """A mounted app that reads its whole body, then answers with its size."""

    def __init__(self, respond_first: bool = False) -> None:
        self.calls = 0
        self.respond_first = respond_first
        self.messages: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        if self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        size = 0
        while True:
            message = await receive()
            self.messages.append(message["type"])
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if not self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def served(upload: Upload, **options: Any) -> Bridge:
    app = Bridge(validator(legacy), **options)
    app.mount("/v2", upload)
    return app


def run(app: Bridge, scope: dict[str, Any], chunks: list[bytes]) -> list[Message]:
    client = Client(chunks)
    return asyncio.run(client.run(app, scope))


def test_too_many_headers_get_431_before_the_mount_runs() -> None:
    upload = Upload()
    headers = [(f"x-h{i}".encode(), b"v") for i in range(11)]
    sent = run(served(upload, max_header_count=10), http_scope("/v2/up", headers=headers), [b""])
    assert sent[0]["status"] == 431
    assert (b"connection", b"close") in sent[0]["headers"]
    assert upload.calls == 0
    fine = run(served(upload, max_header_count=11), http_scope("/v2/up", headers=headers), [b""])
    assert fine[0]["status"] == 200


def test_a_declared_length_over_the_limit_gets_413_before_the_mount_runs() -> None:
    upload = Upload()
    scope = http_scope("/v2/up", method="POST", headers=[(b"content-length", b"11")])
    sent = run(served(upload, max_body_size=10), scope, [b"x" * 11])
    assert sent[0]["status"] == 413
    assert upload.calls == 0


def test_a_chunked_body_that_grows_past_the_limit_gets_413() -> None:
    upload = Upload()
    scope = http_scope("/v2/up", method="POST")  # no Content-Length: chunked
    sent = run(served(upload, max_body_size=10), scope, [b"x" * 6, b"x" * 6, b"x" * 6])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert sent[1]["body"] == b"Request Entity Too Large\n"  # the app's own answer is dropped
    assert upload.messages == ["http.request", "http.disconnect"]  # the rest is never read


def test_a_body_within_the_limit_reaches_the_mount_whole() -> None:
    upload = Upload()
    scope = http_scope("/v2/up", method="POST", headers=[(b"content-length", b"10")])
    sent = run(served(upload, max_body_size=10), scope, [b"x" * 4, b"x" * 6])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"10"
    unlimited = run(served(Upload(), max_body_size=None), http_scope("/v2/up"), [b"x" * 99])
    assert unlimited[1]["body"] == b"99"


def test_once_the_response_started_the_body_ends_but_the_status_stands() -> None:
    upload = Upload(respond_first=True)
    sent = run(served(upload, max_body_size=10), http_scope("/v2/up"), [b"x" * 6, b"x" * 6])
    assert sent[0]["status"] == 200  # already sent; a status cannot be taken back
    assert sent[1]["body"] == b"6"  # the app saw the body end at the limit
    assert upload.messages == ["http.request", "http.disconnect"]


def test_a_websocket_handshake_with_too_many_headers_is_refused() -> None:
    called: list[str] = []

    async def socket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append("yes")

    app = Bridge(validator(legacy), max_header_count=2)
    app.mount("/ws", socket_app)
    headers = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    scope = {**http_scope("/ws/x", headers=headers), "type": "websocket"}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, inbox.get, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert called == []
