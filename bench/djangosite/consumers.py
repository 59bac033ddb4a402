"""The idle feed as Channels consumers: one event, then nothing until the client leaves."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from ..feeds import EVENT, GREETING


class Feed(AsyncHttpConsumer):
    """Server-sent events, as Channels' documentation writes them: the loop in handle()."""

    async def handle(self, body: bytes) -> None:
        await self.send_headers(
            headers=[(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        )
        await self.send_body(EVENT, more_body=True)
        # AsyncConsumer dispatches one message at a time, so http.disconnect waits for
        # this handler: an idle feed ends with the server (Channels' documented SSE shape).
        await asyncio.Event().wait()


class Socket(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=GREETING)

    async def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
        pass
