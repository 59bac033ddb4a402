"""The idle feed of the idle-connection benchmark, written three ways for the same server.

Each serves ``/sse`` (one server-sent event, then silence until the client leaves),
``/ws`` (accept, one text message, then silence) and ``/hello`` (a legacy page,
measured for its p99 while every feed is open):

* ``bridge_feed``: an async route and a websocket route on ``Bridge(legacy)``;
* ``asgi_feed``: the same in plain ASGI, the floor of what a connection costs;
* Channels: ``bench.djangosite.wsgi.channels()`` (AsyncHttpConsumer, AsyncWebsocketConsumer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

EVENT = b"data: hello\n\n"
GREETING = "hello"


def bridge_feed(legacy: Any, threads: int, metrics: bool = True) -> Any:
    """The feed on ``Bridge(legacy)``; ``legacy`` answers ``/hello`` (``bench.apps.micro``)."""
    from werkzeug.wrappers import Response

    from bridge import Bridge, Request, WebSocket, WebSocketDisconnect

    app = Bridge(legacy, max_threads=threads, metrics=metrics)

    @app.route("/sse")
    async def sse(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield EVENT
            await asyncio.Event().wait()  # idle; bridge stops it when the client leaves

        return Response(
            events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(GREETING)
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass

    return app


def generator_feed() -> Any:
    """``/sse`` by hand in plain ASGI, but idle the way bridge's view is: the same async
    generator, defined per request as the view defines it, waiting on an
    ``asyncio.Event``, and one task that listens for the disconnect. The least any
    framework can keep for a view of that shape."""

    async def feed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None and scope["path"] == "/sse"

        async def events() -> AsyncIterator[bytes]:
            yield EVENT
            await asyncio.Event().wait()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            task.cancel()

        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        listener = asyncio.get_running_loop().create_task(listen())
        try:
            async for chunk in events():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            await listener
            return
        listener.cancel()
        await send({"type": "http.response.body", "body": b""})

    return feed


def starlette_feed() -> Any:
    """``/sse`` as Starlette's ``StreamingResponse`` of the same generator."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def sse(request: Any) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield EVENT
            await asyncio.Event().wait()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return Starlette(routes=[Route("/sse", sse)])


SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def generator_asgi_feed(fallback: Any) -> Any:
    """``asgi_feed`` with ``/sse`` served by ``generator_feed``: the floor of a view that is
    an async generator, on a real server beside the plain feed."""
    plain = asgi_feed(fallback)
    sse = generator_feed()

    async def feed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/sse":
            await sse(scope, receive, send)
        else:
            await plain(scope, receive, send)

    return feed


def asgi_feed(fallback: Any) -> Any:
    """The floor: the same three paths with nothing between the server and the app;
    ``fallback`` (``bench.apps.asgi_micro``) answers ``/hello``."""

    async def feed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": GREETING})
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return
        if scope["path"] != "/sse":
            await fallback(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": EVENT, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass

    return feed
