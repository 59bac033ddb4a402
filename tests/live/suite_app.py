"""The WSGI application every live server serves through bridge, one endpoint per check.

Endpoints that behave correctly run inside ``wsgiref.validate.validator``; the ones
that fail on purpose (``/error/...``) do not, because the validator would turn their
deliberate mistakes into different ones. Files named in the query string let a test
and the application, in different processes, tell each other what happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.validate import validator

from bridge import Bridge

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Environment variable naming the directory where the lifespan hooks leave markers.
MARKERS_ENV = "BRIDGE_LIVE_MARKERS"

READ_BLOCK = 64 * 1024
# How long /slow waits for the test's go-ahead before giving up on it.
SLOW_WAIT = 5.0
DISCONNECT_CHUNKS = 1000
DISCONNECT_CHUNK = b"d" * 1024
DISCONNECT_PAUSE = 0.01

PAGE = b"<!doctype html><title>page</title><p>caf\xc3\xa9</p>\n"
PAGE_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Length", str(len(PAGE))),
    ("ETag", '"page-v1"'),
    ("X-Page", "1"),
]


def payload(size: int, seed: int = 3333) -> bytes:
    """Deterministic bytes that a test can regenerate to check a body byte for byte."""
    return random.Random(seed).randbytes(size)


def query(environ: WSGIEnvironment) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(environ["QUERY_STRING"]).items()}


def text(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def upload(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Read the whole body in blocks; answer with its size and sha256."""
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        digest.update(block)
        size += len(block)
    report = {
        "size": size,
        "sha256": digest.hexdigest(),
        "content_length": environ.get("CONTENT_LENGTH"),
        "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
    }
    body = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def upload_outcome(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Read the body and record in a file how the read ended: its size, or the error."""
    marker = query(environ)["marker"]
    stream = environ["wsgi.input"]
    size = 0
    try:
        while True:
            block = stream.read(READ_BLOCK)
            if not block:
                break
            size += len(block)
        outcome = f"complete {size}"
    except OSError as exc:
        outcome = f"{type(exc).__name__} {size}"
    with open(marker + ".tmp", "w") as file:
        file.write(outcome)
    os.replace(marker + ".tmp", marker)
    return text(start_response, "200 OK", outcome.encode())


def download(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """Stream ``size`` bytes of ``payload`` from a generator, with no Content-Length."""
    data = payload(int(query(environ)["size"]))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def blocks() -> Iterator[bytes]:
        for offset in range(0, len(data), READ_BLOCK):
            yield data[offset : offset + READ_BLOCK]

    return blocks()


def wait_for(flag: str) -> bool:
    """Wait up to ``SLOW_WAIT`` seconds for the test to create ``flag``."""
    deadline = time.monotonic() + SLOW_WAIT
    while not os.path.exists(flag):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """Yield one chunk, then wait for the test to say it has arrived before the second."""
    flag = query(environ)["flag"]
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks() -> Iterator[bytes]:
        yield b"first\n"
        yield b"second:seen\n" if wait_for(flag) else b"second:timeout\n"

    return chunks()


class Ticker:
    """A long streaming body that records, in a file, that ``close()`` was called."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(DISCONNECT_CHUNKS):
            self.produced += 1
            yield DISCONNECT_CHUNK
            time.sleep(DISCONNECT_PAUSE)

    def close(self) -> None:
        # Written to a temporary name and renamed, so the test never reads it half-done.
        with open(self.marker + ".tmp", "w") as file:
            file.write(str(self.produced))
        os.replace(self.marker + ".tmp", self.marker)


def disconnect(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Ticker(query(environ)["marker"])


def page(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The same headers and body for GET and HEAD, as WSGI applications usually answer."""
    start_response("200 OK", list(PAGE_HEADERS))
    return [PAGE]


def conditional(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    if environ.get("HTTP_IF_NONE_MATCH") == '"page-v1"':
        start_response("304 Not Modified", [("ETag", '"page-v1"')])
        return []
    return page(environ, start_response)


def no_content(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("204 No Content", [("X-Done", "yes")])
    return []


def echo(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Answer with the CGI part of the environ, every key that is a ``str`` value."""
    cgi = {key: value for key, value in environ.items() if isinstance(value, str)}
    body = json.dumps(cgi, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


ROUTES = {
    "/ping": lambda environ, start_response: text(start_response, "200 OK", b"pong"),
    "/upload": upload,
    "/upload-outcome": upload_outcome,
    "/download": download,
    "/slow": slow,
    "/disconnect": disconnect,
    "/page": page,
    "/conditional": conditional,
    "/no-content": no_content,
}


def correct_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    handler = ROUTES.get(environ["PATH_INFO"], echo)
    return handler(environ, start_response)


def error_before_headers(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    raise RuntimeError("secret-before-headers: this text must never reach the client")


def error_after_headers(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """Fail once the client holds the headers and a first chunk: too late for a 500."""
    flag = query(environ)["flag"]
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks() -> Iterator[bytes]:
        yield b"partial\n"
        wait_for(flag)
        raise RuntimeError("secret-after-headers: the response must be cut")

    return chunks()


FAILING = {
    "/error/before-headers": error_before_headers,
    "/error/after-headers": error_after_headers,
}

validated = validator(correct_app)


def suite_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    failing = FAILING.get(environ["PATH_INFO"])
    if failing is not None:
        return failing(environ, start_response)
    return validated(environ, start_response)


def _marker_hook(name: str) -> None:
    """Append this process's id to ``$BRIDGE_LIVE_MARKERS/name``, when that is set."""
    directory = os.environ.get(MARKERS_ENV)
    if directory:
        with open(os.path.join(directory, name), "a") as file:
            file.write(f"{os.getpid()}\n")


def on_startup() -> None:
    _marker_hook("startup")


def on_shutdown() -> None:
    _marker_hook("shutdown")


wsgi_app: WSGIApplication = suite_app
application = Bridge(wsgi_app, on_startup=[on_startup], on_shutdown=[on_shutdown])
