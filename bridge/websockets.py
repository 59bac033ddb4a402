"""The websocket object that ``@app.websocket`` views receive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._types import Message, Receive, Scope, Send
from .requests import Request
from .wsgi.framing import plain_response


class WebSocketDisconnect(Exception):
    """The client closed the websocket; ``code`` is its close code."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"The websocket was closed with code {code}.")
        self.code = code
        self.reason = reason


class WebSocket:
    """One websocket connection: ``accept()``, then receive and send text, bytes or JSON.

    ``request`` is a werkzeug ``Request`` of the handshake, so cookies (and with them
    the legacy session), headers and the query string read as in any view. Given as
    a function, it is built on first use: a socket that never reads it holds no
    environ, which is most of what an idle connection would otherwise cost.
    """

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, request: Request | Callable[[], Request]
    ) -> None:
        self.scope = scope
        self._request = request
        self.path_params: dict[str, Any] = {}
        self._receive = receive
        self._send = send
        self.accepted = False
        self.closed = False

    @property
    def request(self) -> Request:
        """The handshake as a werkzeug ``Request``."""
        request = self._request
        if not isinstance(request, Request):
            request = self._request = request()
        return request

    async def accept(
        self, subprotocol: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Complete the handshake; before it, the client's connect message is read."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise RuntimeError(f"Expected websocket.connect, received {message['type']!r}.")
        reply: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            reply["headers"] = headers
        await self._send(reply)
        self.accepted = True

    async def receive(self) -> Message:
        """The next ``websocket.receive`` message; raises ``WebSocketDisconnect`` at the end."""
        return self._received(await self._receive())

    def _received(self, message: Message) -> Message:
        # The typed receives await the server's receive themselves rather than through
        # receive(): a socket waiting for its next message keeps one coroutine less.
        if message["type"] == "websocket.disconnect":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason") or "")
        return message

    async def receive_text(self) -> str:
        message = self._received(await self._receive())
        text = message.get("text")
        if text is None:
            raise TypeError("The client sent a binary message where text was expected.")
        return str(text)

    async def receive_bytes(self) -> bytes:
        message = self._received(await self._receive())
        data = message.get("bytes")
        if data is None:
            raise TypeError("The client sent a text message where binary was expected.")
        return bytes(data)

    async def receive_json(self) -> Any:
        message = self._received(await self._receive())
        raw = message.get("text")
        return json.loads(raw if raw is not None else message["bytes"])

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Every message until the client disconnects (text as ``str``, binary as ``bytes``)."""
        while True:
            try:
                message = self._received(await self._receive())
            except WebSocketDisconnect:
                return
            text = message.get("text")
            yield text if text is not None else bytes(message.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def send_json(self, value: Any) -> None:
        await self.send_text(json.dumps(value, separators=(",", ":")))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (before ``accept()``, this refuses the handshake with 403)."""
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def reject_handshake(
    scope: Scope, receive: Receive, send: Send, status: int, text: str | None = None
) -> None:
    """Reject a websocket handshake with ``status``, never an exception to the server.

    With the ASGI ``websocket.http.response`` extension the client gets that status
    and ``text`` (the status's usual sentence by default); without it,
    ``websocket.close`` before ``websocket.accept``, which the server answers with 403
    (ASGI: "If this is sent before the socket is accepted, the server must close the
    connection with a HTTP 403 error code").
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left first
    if "websocket.http.response" in scope.get("extensions", {}):
        for message in plain_response(status, None, text):
            await send({**message, "type": "websocket." + message["type"]})
        return
    await send({"type": "websocket.close", "code": 1008})
