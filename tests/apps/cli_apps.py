"""Small applications for the ``bridge serve`` and ``bridge check`` tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.validate import validator

from bridge import Bridge
from bridge._types import Receive, Scope, Send

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def _text(start_response: StartResponse, body: str) -> list[bytes]:
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def _pid(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with its process id, so a test can tell workers apart."""
    return _text(start_response, str(os.getpid()))


def _where(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with what the legacy app sees of the URL and the client, and its process id."""
    return _text(
        start_response,
        f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}|{environ.get('REMOTE_ADDR')}"
        f"|{environ['wsgi.url_scheme']}|{os.environ.get('CLI_APPS_GREETING', '')}|{os.getpid()}",
    )


def _slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Sleeps for the seconds in the query string, then answers ``done``."""
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    return _text(start_response, "done")


pid_app = validator(_pid)
where_app = validator(_where)
slow_app = validator(_slow)
application = where_app
bridged = Bridge(where_app, max_threads=4)


def create_app(threads: int = 32, *, name: str = "pid") -> Bridge:
    """A factory, for ``cli_apps:create_app(4, name="where")``."""
    return Bridge({"pid": pid_app, "where": where_app}[name], max_threads=threads)


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A pure ASGI app, mounted under a prefix in the tests."""
    if scope["type"] != "http":
        return
    body = f"asgi {scope.get('root_path', '')} {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AsgiObject:
    """An ASGI app as an object with an async ``__call__``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await asgi_app(scope, receive, send)


asgi_object = AsgiObject()
not_an_app = 42


def one_argument(environ: object) -> None:
    """Callable, but with the wrong number of arguments for either protocol."""


async def async_two(scope: object, receive: object) -> None:
    """Async, but not the three arguments of ASGI."""


def broken_factory() -> None:
    raise RuntimeError("the factory is broken")


def migrated_app() -> Bridge:
    """A Bridge part-way through a migration: an async route, a websocket route, a mount."""
    from werkzeug.wrappers import Request, Response

    bridge = Bridge(where_app, max_threads=4)

    @bridge.route("/items", methods=["GET"])
    async def items(request: Request) -> Response:
        return Response("items")

    @bridge.websocket("/ws/echo")
    async def echo(ws: Any) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    bridge.mount("/v2", asgi_app)
    return bridge
