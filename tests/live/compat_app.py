"""The app the compatibility live tests serve: file_wrapper cases, nested bridges, state.

The files to send are named in the query string by the test (loopback only). Each
file response says in ``X-Pathsend`` whether bridge chose to let the server send
the file by path, so a test sees the decision as well as the bytes that arrived.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.validate import validator

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge import Bridge, WebSocket
from bridge.wsgi.filewrapper import FileWrapper

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def opened(kind: str, path: str) -> Any:
    """The file-like object an app would hand to ``wsgi.file_wrapper``."""
    if kind == "plain":
        return open(path, "rb")
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "tempfile":  # Django's FileResponse over a temporary file
        handle = tempfile.NamedTemporaryFile()  # noqa: SIM115 (bridge closes it)
        with open(path, "rb") as source:
            handle.write(source.read())
        handle.seek(0)
        return handle
    if kind == "tar":
        archive = tarfile.open(path)  # noqa: SIM115 (closed with the member)
        member = archive.extractfile(archive.getmembers()[0])
        assert member is not None
        return member
    raise ValueError(kind)


def file_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    query = {key: values[-1] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    status = query.get("status", "200 OK")
    wrapper = environ["wsgi.file_wrapper"](opened(query["kind"], query["path"]))
    offered = "http.response.pathsend" in environ["asgi.scope"].get("extensions", {})
    chosen = isinstance(wrapper, FileWrapper) and wrapper.pathsend_target(int(status[:3]), None)
    headers = [("X-Pathsend", "yes" if offered and chosen else "no")]
    if status[:3] not in ("204", "304"):
        headers.append(("Content-Type", "text/csv"))
    start_response(status, headers)
    # Not inside wsgiref.validate: its wrapper around the iterable would hide the file.
    return wrapper  # type: ignore[no-any-return]


def show_path(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = json.dumps([environ["SCRIPT_NAME"], environ["PATH_INFO"]]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def legacy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/file":
        return file_app(environ, start_response)
    if environ["PATH_INFO"] == "/ping":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"pong"]
    return validator(show_path)(environ, start_response)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"db": "pool-live"}


async def starlette_home(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"starlette sees {request.state.db}")


inner = Bridge(validator(show_path))
application = Bridge(legacy)
application.mount("/v2", inner)
application.mount("/star", Starlette(routes=[Route("/", starlette_home)], lifespan=lifespan))


@application.websocket("/ws")
async def count_headers(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(str(len(ws.request.headers)))
