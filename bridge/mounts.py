"""Mounted ASGI apps: the scope they see, their outcome, and bridge's request limits.

``mounted_scope`` moves a request below a mount's prefix; ``serve_mount`` serves it
and says what status went out. ``guarded`` keeps bridge's limits for mounted
apps, which otherwise see the raw scope and ``receive``: ``max_header_count`` (431)
and ``max_body_size`` (413).

A mounted app reads its own body, so the body limit is kept by counting what passes
through ``receive``. A declared ``Content-Length`` over the limit is refused before the
app runs. A body without one (chunked) that grows past the limit ends the app's body
with ``http.disconnect`` (what an ASGI app gets when the client goes; Starlette raises
``ClientDisconnect``) and, when the app has not started its response yet, the client
gets ``413`` with ``Connection: close``; whatever the app sends after that is dropped.
If the response had already started, it goes on as the app sends it: a status cannot
be taken back. A websocket handshake with too many headers is refused as bridge's own
websocket routes reject it (``bridge.websockets.reject_handshake``).
"""

from __future__ import annotations

from typing import Any

from ._types import ASGIApp, Message, Receive, Scope, Send
from .websockets import reject_handshake
from .wsgi.cycle import CycleLimits, Outcome
from .wsgi.framing import closing_headers, plain_response


def mounted_scope(
    scope: Scope, prefix: str, path: str, state: dict[str, Any] | None = None
) -> Scope:
    """The scope a mounted app sees: ``root_path`` grows by the prefix, and ``path``
    includes ``root_path``, as the ASGI spec asks (Starlette reads it that way).

    ``path`` is the request's ``RequestPath.route``, so the mounted app (a nested
    ``Bridge`` too) sees what the legacy app would have seen below the prefix.
    ``raw_path`` stays the bytes the client sent: the mounted app uses it only where it
    agrees with ``path`` (see ``bridge.wsgi.environ.request_path``). ``state`` is
    bridge's own lifespan state, for a server that keeps none (ASGI: "the server will
    copy it").
    """
    root_path = scope.get("root_path", "").rstrip("/") + prefix
    child = dict(scope)
    child["root_path"] = root_path
    child["path"] = root_path + path[len(prefix) :]
    if state is not None and "state" not in scope:
        child["state"] = dict(state)
    return child


async def serve_mount(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> Outcome:
    """Serve one request with a mounted app; the outcome is the status it sent."""
    status = 0

    async def send_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await app(scope, receive, send_status)
    return Outcome(status)


def guarded(app: ASGIApp, limits: CycleLimits) -> ASGIApp:
    """``app`` behind bridge's header-count and body-size limits."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        if len(scope.get("headers", ())) > limits.max_header_count:
            if kind == "http":
                await _answer(send, 431)
            else:  # 431 with websocket.http.response, else a close the server makes 403
                await reject_handshake(scope, receive, send, 431)
            return
        maximum = limits.max_body_size
        if kind == "websocket" or maximum is None:
            await app(scope, receive, send)
            return
        if _declared_length(scope) > maximum:
            await _answer(send, 413)
            return
        await _Guard(app, maximum, receive, send).run(scope)

    return limited


async def _answer(send: Send, status: int) -> None:
    """bridge's own answer in the mounted app's place (413, 431), closing the connection."""
    for message in plain_response(status, closing_headers(status)):
        await send(message)


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
                    await _answer(self._send, 413)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
