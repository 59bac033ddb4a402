"""bridge's request limits for mounted ASGI apps, which otherwise see the raw scope and
``receive``: ``max_header_count`` (431) and ``max_body_size`` (413).

A mounted app reads its own body, so the body limit is kept by counting what passes
through ``receive``. A declared ``Content-Length`` over the limit is refused before the
app runs. A body without one (chunked) that grows past the limit ends the app's body
with ``http.disconnect`` (what an ASGI app gets when the client goes; Starlette raises
``ClientDisconnect``) and, when the app has not started its response yet, the client
gets ``413`` with ``Connection: close``; whatever the app sends after that is dropped.
If the response had already started, it goes on as the app sends it: a status cannot
be taken back. A websocket handshake with too many headers is refused as bridge's own
websocket routes refuse it (``bridge.websockets.refuse_handshake``).
"""

from __future__ import annotations

from ._types import ASGIApp, Message, Receive, Scope, Send
from .websockets import refuse_handshake
from .wsgi.cycle import Limits
from .wsgi.framing import REFUSALS
from .wsgi.gateway import refuse


def within_limits(app: ASGIApp, limits: Limits) -> ASGIApp:
    """``app`` behind bridge's header-count and body-size limits."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        if len(scope.get("headers", ())) > limits.max_header_count:
            if kind == "http":
                await refuse(send, 431)
            else:  # 431 with websocket.http.response, else a close the server makes 403
                await refuse_handshake(scope, receive, send, 431, REFUSALS[431])
            return
        maximum = limits.max_body_size
        if kind == "websocket" or maximum is None:
            await app(scope, receive, send)
            return
        if _declared_length(scope) > maximum:
            await refuse(send, 413)
            return
        await _Guard(app, maximum, receive, send).run(scope)

    return limited


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if bytes(name).lower() == b"content-length":
            text = bytes(value).strip()
            return int(text) if text.isdigit() else 0
    return 0


class _Guard:
    """One request's count of body bytes, and whether bridge answered in the app's place."""

    def __init__(self, app: ASGIApp, maximum: int, receive: Receive, send: Send) -> None:
        self.app = app
        self.maximum = maximum
        self._receive = receive
        self._send = send
        self.received = 0
        self.started = False  # the app's response has started
        self.refused = False  # bridge sent the 413; the app's messages go nowhere

    async def run(self, scope: Scope) -> None:
        await self.app(scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.maximum:
                if not self.started:
                    self.refused = True
                    await refuse(self._send, 413)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
