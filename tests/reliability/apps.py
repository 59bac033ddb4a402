"""WSGI applications for the reliability tests, and ``Bridge`` instances with small limits.

The well-behaved routes run under ``wsgiref.validate.validator``; the routes that break
the WSGI contract on purpose (``HOSTILE``) run without it, since the validator would
raise its own ``AssertionError`` first and hide what bridge does with the mistake.
A counting middleware around everything records calls and ``close()`` calls, so a test
can ask ``/stats`` whether every iterable was closed exactly once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.validate import validator

from bridge import Bridge

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Where uploads record what they saw, one line per event, so that a test can read the
# records after the server process has gone (graceful shutdown).
RECORDS_ENV = "BRIDGE_RELIABILITY_RECORDS"

# Text that must never reach a client: each failing route raises with it.
SECRET = "secret-7f3a: the database password is hunter2"

CHUNK = 64 * 1024

_lock = threading.Lock()
_stats = {"calls": 0, "closed": 0, "double_close": 0, "uploads_complete": 0, "uploads_short": 0}


@functools.lru_cache(maxsize=64)
def payload(seed: int, size: int) -> bytes:
    """The deterministic body of ``/download?seed=S&size=N``, computed alike by the client."""
    return random.Random(seed).randbytes(size)


def _count(key: str) -> None:
    with _lock:
        _stats[key] += 1


def _record(line: str) -> None:
    path = os.environ.get(RECORDS_ENV)
    if path:
        with _lock, open(path, "a", encoding="utf-8") as records:
            records.write(line + "\n")
            records.flush()
            os.fsync(records.fileno())


def _query(environ: WSGIEnvironment) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response: StartResponse, data: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(data, sort_keys=True).encode("ascii")
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


# -- well-behaved routes (validated) ----------------------------------------------------


def _download(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    query = _query(environ)
    data = payload(int(query.get("seed", "0")), int(query.get("size", "0")))
    headers = [("Content-Type", "application/octet-stream")]
    if query.get("cl") == "1":
        headers.append(("Content-Length", str(len(data))))
    start_response("200 OK", headers)
    return (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))


def _upload(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    # Django-style: one read of exactly CONTENT_LENGTH bytes, trusting the length.
    upload_id = environ.get("HTTP_X_UPLOAD_ID", "-")
    declared = int(environ.get("CONTENT_LENGTH") or 0)
    _record(f"{upload_id} start {declared}")
    try:
        if environ.get("CONTENT_LENGTH"):
            body = environ["wsgi.input"].read(declared)
        else:  # chunked: read to the end, as wsgi.input_terminated allows
            parts = []
            while part := environ["wsgi.input"].read(CHUNK):
                parts.append(part)
            body = declared_body = b"".join(parts)
            declared = len(declared_body)
    except OSError as exc:
        _record(f"{upload_id} failed {type(exc).__name__}")
        raise
    if len(body) != declared:
        # What must never happen: a short body handed over as if it were complete.
        _count("uploads_short")
        _record(f"{upload_id} short {len(body)}")
    else:
        _count("uploads_complete")
        _record(f"{upload_id} complete {len(body)}")
    return _json(start_response, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def _fail_after_headers(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    # Larger than the response buffer of the Bridge serving it, so the thread waits
    # until the loop has sent the headers: the failure is surely after them.
    size = int(_query(environ).get("size", str(2 * 1024 * 1024)))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body() -> Iterator[bytes]:
        yield b"x" * size
        raise RuntimeError(SECRET + " (after headers)")

    return body()


def _raise(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    raise RuntimeError(SECRET)


def _slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    time.sleep(float(_query(environ).get("seconds", "1")))
    return _json(start_response, {"slept": True})


def _headers(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return _json(start_response, {k: v for k, v in environ.items() if k.startswith("HTTP_")})


def _echo_path(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return _json(
        start_response,
        {"PATH_INFO": environ["PATH_INFO"], "QUERY_STRING": environ["QUERY_STRING"]},
    )


def _stats_view(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    with _lock:
        snapshot = dict(_stats)
    # This request's own iterable is not closed yet.
    snapshot["open"] = snapshot["calls"] - snapshot["closed"] - 1
    snapshot["threads"] = threading.active_count()
    return _json(start_response, snapshot)


def _ping(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]


ROUTES: dict[str, Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]] = {
    "/ping": _ping,
    "/download": _download,
    "/upload": _upload,
    "/fail-after-headers": _fail_after_headers,
    "/raise": _raise,
    "/slow": _slow,
    "/headers": _headers,
    "/stats": _stats_view,
}


def _router(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    view = ROUTES.get(environ["PATH_INFO"], _echo_path)
    return view(environ, start_response)


validated_app = validator(_router)


# -- routes that break the WSGI contract on purpose (not validated) ---------------------


class _CloseRaises:
    """A body whose ``close()`` raises after the body was produced."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        raise RuntimeError(SECRET + " (in close)")


def _crlf_header(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Evil", "a\r\nSet-Cookie: x=1")])
    return [b"split"]


def _latin1_header(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Snowman", "\u2603")])
    return [b"snow"]


def _no_reason(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"no reason"]


def _no_start_response(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return [b"forgot start_response"]


def _no_start_response_empty(
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    return []


def _close_raises(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return _CloseRaises([b"hello"])


def _close_raises_unsized(
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _CloseRaises([b"hello"])


def _str_body(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]  # type: ignore[list-item]


HOSTILE: dict[str, Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]] = {
    "/crlf-header": _crlf_header,
    "/latin1-header": _latin1_header,
    "/no-reason": _no_reason,
    "/no-start-response": _no_start_response,
    "/no-start-response-empty": _no_start_response_empty,
    "/close-raises": _close_raises,
    "/close-raises-unsized": _close_raises_unsized,
    "/str-body": _str_body,
}


class _Counted:
    """Wraps a body to count ``close()`` calls (PEP 3333: exactly once, on every path)."""

    def __init__(self, iterable: Iterable[bytes]) -> None:
        self.iterable = iterable
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.iterable)

    def close(self) -> None:
        if self.closed:
            _count("double_close")
            return
        self.closed = True
        _count("closed")
        close = getattr(self.iterable, "close", None)
        if close is not None:
            close()


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Every route; the hostile ones bypass the validator."""
    view: WSGIApplication = HOSTILE.get(environ["PATH_INFO"], validated_app)
    _count("calls")
    try:
        return _Counted(view(environ, start_response))
    except BaseException:
        _count("closed")  # nothing to close: the call itself raised
        raise


# Small limits, so that the tests reach them with few connections.
MAX_THREADS = 8

# Hostile input: default limits, except the pool.
hostile = Bridge(application, max_threads=MAX_THREADS)

# Load and faults: 64 KiB buffers so that both paths are loaded, the whole-body handoff
# and the streamed one (with backpressure); a 4 MiB body limit.
load = Bridge(
    application,
    max_threads=MAX_THREADS,
    max_pending=256,
    request_buffer_size=64 * 1024,
    response_buffer_size=64 * 1024,
    max_body_size=4 * 1024 * 1024,
)

# Slow clients: the default 1 MiB buffers, which are what keep slow clients off threads.
slow = Bridge(application, max_threads=MAX_THREADS)

# Graceful shutdown: uploads above 64 KiB stream into the thread.
shutdown = Bridge(application, max_threads=MAX_THREADS, request_buffer_size=64 * 1024)

# Admission: two threads and four waiting places, so a burst of twenty overflows.
overload = Bridge(application, max_threads=2, max_pending=4)

# Trickled uploads: the default limits (max_uploads, the intake budget, among them).
trickle = Bridge(application, max_threads=MAX_THREADS)
