"""gunicorn's request-line and header-size limits, for servers that have none of their own.

uvicorn, hypercorn and granian take a request line and header fields of any length
their parsers accept; gunicorn refuses past ``--limit-request-line`` (414) and
``--limit-request-field_size`` (431). Applied in front of the app, these keep a
gunicorn deployment's limits when the server changes.
"""

from __future__ import annotations

from .._types import ASGIApp, Receive, Scope, Send
from ..wsgi.framing import CLOSE, plain_response


class GunicornLimits:
    """gunicorn's request-line and header limits, answered with gunicorn's statuses.

    ``line``: the longest request line, 0 for any (``--limit-request-line``, 4094);
    ``fields``: the most header fields (``--limit-request-fields``, 100), 0 for any;
    ``field_size``: the longest ``Name: value`` (``--limit-request-field_size``, 8190).
    """

    def __init__(self, app: ASGIApp, *, line: int, fields: int, field_size: int) -> None:
        self.app = app
        self.line = line
        self.fields = fields
        self.field_size = field_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        excess = self.excess(scope)
        if excess is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            status, text = excess
            for message in plain_response(status, [CLOSE], text):
                await send(message)

    def excess(self, scope: Scope) -> tuple[int, str] | None:
        """The status and sentence for what ``scope`` has past a limit, or None when it is
        within them."""
        target = scope.get("raw_path") or scope["path"].encode("utf-8")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        method = scope.get("method", "GET")
        version = scope.get("http_version", "1.1")
        length = len(method) + len(target) + len("  HTTP/") + len(version)
        if self.line and length > self.line:
            return 414, f"The request line is {length} bytes; the limit is {self.line}.\n"
        headers = scope["headers"]
        if self.fields and len(headers) > self.fields:
            count = len(headers)
            return 431, f"The request has {count} header fields; the limit is {self.fields}.\n"
        if self.field_size:
            for name, value in headers:
                size = len(name) + len(value) + 2
                if size > self.field_size:
                    return 431, (
                        f"The header field {name.decode('latin-1')} is {size} bytes; "
                        f"the limit is {self.field_size}.\n"
                    )
        return None
