"""The applications under test, one WSGI app and the ASGI wrappers each contender puts around it.

Servers import them as ``bench.apps:<contender>__<app>``, for example
``bench.apps:a2wsgi__micro`` or ``bench.apps:wsgi__sample`` for the native WSGI
servers; the thread count comes from ``BENCH_THREADS`` so each server gets the same.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

HELLO = b"Hello, world!"
CHUNK = 64 * 1024
SLEEP_SECONDS = 0.02
SLOW_FIRST = b"first chunk\n"
SLOW_SECOND = b"second chunk\n"
SLOW_PAUSE = 0.05

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
ASGIApp = Callable[..., Any]

_ZEROS = bytes(CHUNK)

# BENCH_SWITCH_INTERVAL (seconds) sets sys.setswitchinterval in the server, to measure
# what the GIL's hand-off interval (5 ms by default) costs the threaded workloads.
if os.environ.get("BENCH_SWITCH_INTERVAL"):
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))


def _download(size: int) -> Iterator[bytes]:
    """A generator of 64 KiB chunks, so the adapter must stream (no Content-Length)."""
    remaining = size
    while remaining > 0:
        n = min(remaining, CHUNK)
        yield _ZEROS if n == CHUNK else _ZEROS[:n]
        remaining -= n


def _file_chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK * 16):
            yield chunk


def _slow() -> Iterator[bytes]:
    yield SLOW_FIRST
    time.sleep(SLOW_PAUSE)
    yield SLOW_SECOND


def micro(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The synthetic workloads, dispatched by path: hello, sleep, echo, download, slow."""
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
        )
        return [HELLO]
    if path == "/sleep":
        # Stands in for a database or HTTP call: the thread waits, the CPU does not.
        time.sleep(SLEEP_SECONDS)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/echo":
        # Read in chunks so the app itself holds 64 KiB at most: memory growth is the adapter's.
        stream = environ["wsgi.input"]
        total = 0
        while chunk := stream.read(CHUNK):
            total += len(chunk)
        body = str(total).encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if path == "/download":
        size = int(environ.get("QUERY_STRING") or CHUNK)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _download(size)
    if path == "/slow":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _slow()
    if path == "/file":
        # A real file through wsgi.file_wrapper (PEP 3333's optional fast path): a
        # server or adapter may send it without the thread reading it (pathsend).
        name = os.environ["BENCH_FILE"]
        size = os.path.getsize(name)
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        wrapper = environ.get("wsgi.file_wrapper")
        handle = open(name, "rb")  # noqa: SIM115 - the server closes it through the wrapper
        if wrapper is not None:
            return wrapper(handle, CHUNK * 16)  # type: ignore[no-any-return]
        return _file_chunks(handle)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def sample() -> Callable[..., Iterable[bytes]]:
    """The sample application, built with ``create_app()`` where it offers one."""
    import sample_wsgi_app

    create = getattr(sample_wsgi_app, "create_app", None)
    if create is not None:
        return create()  # type: ignore[no-any-return]
    app = getattr(sample_wsgi_app, "app", None)
    if app is None:
        raise LookupError("sample_wsgi_app has neither create_app() nor app.")
    return app  # type: ignore[no-any-return]


def has_sample() -> bool:
    """Whether the sample application can be imported yet."""
    try:
        import sample_wsgi_app
    except ImportError:
        return False
    return hasattr(sample_wsgi_app, "create_app") or hasattr(sample_wsgi_app, "app")


async def asgi_micro(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The pure-ASGI ceiling: the same responses as ``micro`` with no adapter in between."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        total = 0
        more = True
        while more:
            message = await receive()
            total += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(total).encode()
    elif path == "/hello":
        body = HELLO
    else:
        body = b""
    if path in ("/hello", "/echo"):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/download":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for chunk in _download(int(scope["query_string"] or CHUNK)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/file":
        await _asgi_file(scope, send)
        return
    if path == "/slow":
        import asyncio

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": SLOW_FIRST, "more_body": True})
        await asyncio.sleep(SLOW_PAUSE)
        await send({"type": "http.response.body", "body": SLOW_SECOND})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"not found"})


async def _asgi_file(scope: dict[str, Any], send: Any) -> None:
    """The file of ``/file``: with ``http.response.pathsend`` where the server has it."""
    name = os.environ["BENCH_FILE"]
    size = os.path.getsize(name)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size).encode()),
            ],
        }
    )
    if "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.pathsend", "path": name})
        return
    with open(name, "rb") as handle:  # page-cached: reads do not block
        while chunk := handle.read(CHUNK * 16):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def threads() -> int:
    """The worker-thread count every contender gets for this run."""
    return int(os.environ.get("BENCH_THREADS", "32"))


def bridge_supports(option: str) -> bool:
    """Whether this version of ``Bridge`` has a method or keyword argument named ``option``."""
    from bridge import Bridge

    return hasattr(Bridge, option) or option in inspect.signature(Bridge.__init__).parameters


def _bridge(wsgi: Any, **options: Any) -> ASGIApp:
    from bridge import Bridge

    # BENCH_ADAPTIVE=0 fixes the thread count at max_threads; unset keeps bridge's default.
    adaptive = os.environ.get("BENCH_ADAPTIVE")
    if adaptive is not None and bridge_supports("adaptive_threads"):
        options["adaptive_threads"] = adaptive == "1"

    app: ASGIApp = Bridge(wsgi, max_threads=threads(), **options)
    return app


def _bridge_routes(wsgi: Any) -> ASGIApp:
    """Bridge with 20 async routes registered that the benchmarked requests never match."""
    app: Any = _bridge(wsgi)
    for number in range(20):

        async def view(request: Any, item_id: int) -> Any:
            from werkzeug.wrappers import Response

            return Response(f"item {item_id}")

        app.route(f"/async/{number}/<int:item_id>", methods=["GET"])(view)
    routed: ASGIApp = app
    return routed


def _a2wsgi(wsgi: Any) -> ASGIApp:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(wsgi, workers=threads())


def _asgiref(wsgi: Any) -> ASGIApp:
    from asgiref.wsgi import WsgiToAsgi

    # WsgiToAsgi has no thread option: every request goes through one thread.
    return WsgiToAsgi(wsgi)  # type: ignore[no-untyped-call]


WRAPPERS: dict[str, Callable[[Any], ASGIApp]] = {
    "bridge": _bridge,
    "bridge_routes": _bridge_routes,
    "bridge_metrics_on": lambda wsgi: _bridge(wsgi, metrics=True),
    "bridge_metrics_off": lambda wsgi: _bridge(wsgi, metrics=False),
    "a2wsgi": _a2wsgi,
    "asgiref": _asgiref,
    "wsgi": lambda wsgi: wsgi,
}

# The pure-ASGI ceiling has no WSGI app inside; it exists for the synthetic workloads only.
CEILINGS = {"micro": asgi_micro}


def _wsgi_app(name: str) -> Any:
    if name == "micro":
        return micro
    if name == "sample":
        return sample()
    if name == "django":
        from .djangosite.wsgi import wsgi

        return wsgi()
    if name == "flask":
        from .flasksite import create_app

        return create_app()
    raise AttributeError(name)


def _special(contender: str, app_name: str) -> Any:
    """The applications that are not a wrapper around a WSGI app, or None."""
    if contender == "asgi" and app_name in CEILINGS:
        return CEILINGS[app_name]
    if app_name == "feed":
        from . import feeds

        if contender == "asgi":
            return feeds.asgi_feed(asgi_micro)
        if contender == "generator":
            return feeds.generator_asgi_feed(asgi_micro)
        if contender == "bridge":
            return feeds.bridge_feed(micro, threads())
        if contender == "channels":
            from .djangosite.wsgi import channels

            return channels()
    if contender in ("hop", "inline") and app_name == "micro":
        from . import reference

        return reference.hop(micro, threads()) if contender == "hop" else reference.inline(micro)
    if contender == "djangoasgi" and app_name == "django":
        from .djangosite.wsgi import asgi

        return asgi()
    return None


def __getattr__(name: str) -> Any:
    """Build ``<contender>__<app>`` on first import, so each server builds only its own."""
    contender, sep, app_name = name.partition("__")
    app = _special(contender, app_name) if sep else None
    if app is None:
        known = ("micro", "sample", "django", "flask")
        if not sep or contender not in WRAPPERS or app_name not in known:
            raise AttributeError(f"bench.apps has no application {name!r}.")
        app = WRAPPERS[contender](_wsgi_app(app_name))
    globals()[name] = app
    return app
