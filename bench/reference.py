"""The two reference adapters of the ``limits`` group: the least any WSGI-on-ASGI adapter does.

Neither is a usable adapter: both hold the whole body in memory, ignore ``write()``
order against the iterable, and know nothing of disconnects, limits or errors. They
answer hello world correctly, which is all the limits group asks of them, and so
mark what the design can reach:

* ``inline``: the WSGI app called on the event loop itself, no thread at all. No
  adapter that runs blocking code off the loop can be faster than this.
* ``hop``: the same, with one ``run_in_executor`` around the call: the least a
  thread-hop adapter can do (minimal environ, one hop, two sends).
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
WSGI = Callable[..., Iterable[bytes]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def minimal_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The keys PEP 3333 requires, and the request headers as ``HTTP_*``: nothing else."""
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        # PEP 3333: "native strings" holding the bytes as latin-1.
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        value = raw_value.decode("latin-1")
        environ[name] = f"{environ[name]},{value}" if name in environ else value
    return environ


def call(app: WSGI, environ: dict[str, Any]) -> Answer:
    """Run ``app`` to the end: its status, its headers encoded for ASGI, its whole body."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return int(status[:3]), raw, b"".join(chunks)


async def _send(send: Send, answer: Answer) -> None:
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def inline(app: WSGI) -> Callable[..., Any]:
    """``app`` called on the event loop: the fastest correct WSGI answer, and no adapter."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        environ = minimal_environ(scope, await _read_body(receive))
        await _send(send, call(app, environ))

    return asgi


def hop(app: WSGI, threads: int) -> Callable[..., Any]:
    """``app`` called in a thread through ``run_in_executor``: the minimal thread hop."""
    executor = ThreadPoolExecutor(max_workers=threads)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        environ = minimal_environ(scope, await _read_body(receive))
        loop = asyncio.get_running_loop()
        await _send(send, await loop.run_in_executor(executor, call, app, environ))

    return asgi
