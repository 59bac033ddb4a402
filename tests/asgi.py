"""Message-level helpers: a scripted ``receive``, a recording ``send``, and HTTP scopes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from bridge._types import ASGIApp, Message


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    query_string: bytes = b"",
    root_path: str = "",
    raw_path: bytes | None = None,
    scheme: str = "http",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int | None] | None = ("127.0.0.1", 8000),
    http_version: str = "1.1",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": list(headers),
        "client": client,
        "server": server,
    }
    if raw_path is not None:
        scope["raw_path"] = raw_path
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


class Client:
    """Drives one ASGI HTTP exchange: body chunks in, messages out, optional disconnect."""

    def __init__(
        self, chunks: Iterable[bytes] = (b"",), *, disconnect: bool = False, complete: bool = True
    ) -> None:
        """``complete=False`` leaves the body unfinished (every message has ``more_body``)."""
        parts = list(chunks) or [b""]
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        for index, chunk in enumerate(parts):
            more = index < len(parts) - 1 or not complete
            self.inbox.put_nowait({"type": "http.request", "body": chunk, "more_body": more})
        if disconnect:
            self.inbox.put_nowait({"type": "http.disconnect"})
        self.sent: list[Message] = []
        self.on_send: Any = None

    async def receive(self) -> Message:
        return await self.inbox.get()

    def disconnect(self) -> None:
        self.inbox.put_nowait({"type": "http.disconnect"})

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if self.on_send is not None:
            self.on_send(message)

    async def run(self, app: ASGIApp, scope: dict[str, Any], timeout: float = 10) -> list[Message]:
        await asyncio.wait_for(app(scope, self.receive, self.send), timeout)
        return self.sent

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def finished(self) -> bool:
        last = self.sent[-1] if self.sent else None
        return bool(
            last and last["type"] == "http.response.body" and not last.get("more_body", False)
        )
