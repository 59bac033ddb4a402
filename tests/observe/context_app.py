"""An app that reports the context each request starts from, for the pipelining tests.

``application`` is ``Bridge`` inside an outer middleware that sets a context variable
for its request and resets it after, as OpenTelemetry's and Sentry's middleware do
with their span and scope. Every response says what it found already set when it
started: nothing, if each request starts from a clean context.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from typing import Any
from wsgiref.validate import validator

from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge._types import Message, Receive, Scope, Send

outer = contextvars.ContextVar[str | None]("outer", default=None)
inner = contextvars.ContextVar[str | None]("inner", default=None)


def legacy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    found = {"outer": outer.get(), "inner": inner.get()}
    inner.set("legacy " + environ["PATH_INFO"])
    body = json.dumps(found).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    yield body


bridge = Bridge(validator(legacy), max_threads=1, adaptive_threads=False)


@bridge.route("/async")
async def set_in_async_view(request: Request) -> Response:
    found = {"outer": outer.get(), "inner": inner.get()}
    inner.set("async " + request.path)
    return Response(json.dumps(found), mimetype="application/json")


class Outer:
    """Sets ``outer`` to the request's path for the request, and says what it found."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        before = outer.get() or "-"
        token = outer.set(scope["path"])

        async def tell(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-outer-before", before.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tell)
        finally:
            outer.reset(token)


application = Outer(bridge)
