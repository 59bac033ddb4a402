"""Applications for the worker lifecycle tests: recycling, shutdown, logs.

``application`` is a plain WSGI callable; ``bridged`` builds its own ``Bridge`` in the
module, with the metrics page, a shadow route, an SSE stream, a websocket and a slow
legacy path, as an app that wants the dashboard does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING
from wsgiref.validate import validator

from werkzeug.wrappers import Request, Response

from bridge import Bridge
from bridge.websockets import WebSocket

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

TEXT = "text/plain; charset=utf-8"


def _legacy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with its process id; ``/slow?S`` first sleeps S seconds; ``/boom`` fails,
    and ``/cut`` fails after its first chunk went out."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the legacy app failed on purpose")
    if path == "/cut":
        start_response("200 OK", [("Content-Type", TEXT)])
        return _cut()
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 0))
    body = f"pid|{os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", TEXT), ("Content-Length", str(len(body)))])
    return [body]


def _cut() -> Iterable[bytes]:
    yield b"first chunk\n"
    time.sleep(0.5)  # the first chunk is out by now, whatever bridge's framing
    raise RuntimeError("the legacy app failed after its headers")


application = validator(_legacy)

# Shutdown hooks write here, so a test can see that they ran.
SHUTDOWN_FILE = os.environ.get("LIFECYCLE_SHUTDOWN_FILE")


def _record_shutdown() -> None:
    if SHUTDOWN_FILE:
        with open(SHUTDOWN_FILE, "a") as file:
            file.write(f"shutdown {os.getpid()}\n")


bridged = Bridge(application, metrics_path="/_bridge/metrics", on_shutdown=[_record_shutdown])


@bridged.route("/", methods=["GET"], shadow=True)
async def home(request: Request) -> Response:
    return Response(f"pid|{os.getpid()}", content_type=TEXT)


@bridged.route("/events", methods=["GET"])
async def events(request: Request) -> Response:
    async def beats() -> AsyncIterator[bytes]:
        yield b"data: open\n\n"
        while True:
            await asyncio.sleep(0.5)
            yield b"data: beat\n\n"

    return Response(beats(), content_type="text/event-stream")


@bridged.websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("open")
    while True:
        await socket.receive_text()


# A live feed with no websocket: an SSE route that subscribes to the broadcast.
sse_only = Bridge(application)


@sse_only.route("/feed", methods=["GET"])
async def feed(request: Request) -> Response:
    async def stream() -> AsyncIterator[str]:
        async with sse_only.broadcast.subscribe("items") as events:
            while True:
                yield (await events.get()).sse("item")

    return Response(stream(), content_type="text/event-stream")
