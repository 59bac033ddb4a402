"""The WSGI app the gunicorn worker tests serve: it reports its process and environ."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.validate import validator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MARKERS_ENV = "BRIDGE_GUNICORN_MARKERS"


def _app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":
        # No Content-Length: the server must frame it (chunked, or close for HTTP/1.0).
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _parts(pause=0.3)
    if path == "/slow":
        # Leaves a marker once the request is in the app, then takes its time.
        seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0])
        Path(os.environ[MARKERS_ENV], f"slow-started-{os.getpid()}").touch()
        time.sleep(seconds)
    body = json.dumps(
        {
            "pid": os.getpid(),
            "path": path,
            "multiprocess": environ["wsgi.multiprocess"],
            "script_name": environ["SCRIPT_NAME"],
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _parts(pause: float) -> Iterator[bytes]:
    # The pauses make bridge send the first part before the app has finished.
    for i in range(3):
        if i:
            time.sleep(pause)
        yield f"part {i}\n".encode()


app = validator(_app)
