"""The request log, ported from WSGI (`middleware.RequestLogMiddleware`) to ASGI.

Wrapped around the whole `Bridge`, it logs async routes, websockets and legacy pages
alike, with the line the legacy middleware wrote: `GET /items?page=2 200 5120 bytes 3.1 ms`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger("sample_wsgi_app")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _target(scope: MutableMapping[str, Any]) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"  # as PATH_INFO, what the legacy log showed
    query = scope.get("query_string", b"").decode("latin-1")
    return path + (f"?{query}" if query else "")


class RequestLog:
    """Logs one INFO line per HTTP request or websocket on `sample_wsgi_app` when it ends.

    Args:
        app: the ASGI application to wrap, usually the `Bridge`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
        status = "-"
        sent = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = str(message["status"])
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "websocket.accept":
                status = "101"
            elif kind == "websocket.send":
                sent += len(message.get("bytes") or (message.get("text") or "").encode())
            elif kind == "websocket.close" and status == "-":
                status = "403"  # closed before the handshake completed
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        except BaseException:
            status = "500" if status == "-" else status
            raise
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            logger.info("%s %s %s %s bytes %.1f ms", method, _target(scope), status, sent, elapsed)
