"""Apps with shadow routes for the command line: ``bridge check``, ``bridge serve``'s startup
line, and ``bridge replay`` of a downloaded mismatch."""

from __future__ import annotations

import json
import os
from typing import Any
from wsgiref.validate import validator

from werkzeug.wrappers import Request, Response

from bridge import Bridge
from bridge.shadow import Shadow

Environ = dict[str, Any]
TITLES = {1: "Tea", 2: "Milk"}


def legacy(environ: Environ, start_response: Any) -> list[bytes]:
    """/items/<id> as JSON with the item's title and the worker's pid."""
    while environ["wsgi.input"].read(65536):
        pass
    item_id = environ["PATH_INFO"].rsplit("/", 1)[-1]
    title = TITLES.get(int(item_id), "?") if item_id.isdigit() else "?"
    body = json.dumps({"id": item_id, "title": title, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def shadowed_app(fixed: bool = False, show_bodies: bool = True, ready_after: int = 1000) -> Bridge:
    """A Bridge with one migrated route and one shadow route whose view shouts the title
    (the bug), unless ``fixed``."""
    bridge = Bridge(validator(legacy), max_threads=4, dashboard_path="/_bridge/")

    @bridge.route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return Response("ok")

    shadow = Shadow(show_bodies=show_bodies, ready_after=ready_after)

    @bridge.route("/items/<int:item_id>", methods=["GET"], shadow=shadow)
    async def item(request: Request, item_id: int) -> Response:
        title = TITLES.get(item_id, "?")
        data = {"id": str(item_id), "title": title if fixed else title.upper(), "pid": os.getpid()}
        return Response(json.dumps(data), mimetype="application/json")

    return bridge


application = shadowed_app()
fixed_application = shadowed_app(fixed=True)
ready_after_20 = shadowed_app(fixed=True, ready_after=20)
