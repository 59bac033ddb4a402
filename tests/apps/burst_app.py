"""A Bridge with an idle event stream and a view that blocks, for the detector's live test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from wsgiref.validate import validator

from werkzeug.wrappers import Response

from bridge import Bridge, Request


def legacy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"legacy"]


app = Bridge(validator(legacy))


@app.route("/sse")
async def sse(request: Request) -> Response:
    async def events() -> AsyncIterator[bytes]:
        yield b"data: hello\n\n"
        await asyncio.Event().wait()  # idle until the client leaves

    return Response(events(), mimetype="text/event-stream")


@app.route("/sleeps")
async def sleeps(request: Request) -> str:
    time.sleep(0.2)  # blocks the loop: the detector must say so
    return "slept"
