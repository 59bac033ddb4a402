"""A WSGI app that streams large bodies in both directions, for the memory test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from wsgiref.validate import validator

from bridge import Bridge

CHUNK = b"\x5a" * (64 * 1024)


def app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/upload":
        digest = hashlib.sha256()
        total = 0
        read = environ["wsgi.input"].read
        while chunk := read(256 * 1024):
            digest.update(chunk)
            total += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{total} {digest.hexdigest()}".encode()]
    size = int(environ["QUERY_STRING"] or "0")

    def body() -> Iterator[bytes]:
        for _ in range(size // len(CHUNK)):
            yield CHUNK

    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return body()


application = Bridge(validator(app), max_body_size=None)
