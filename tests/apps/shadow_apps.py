"""Apps with shadow routes for the command line: ``bridge check``, ``bridge serve``'s startup
line, and ``bridge replay`` of a downloaded mismatch."""

from __future__ import annotations

import json
from typing import Any
from wsgiref.validate import validator

from werkzeug.wrappers import Request, Response

from bridge import Bridge
from bridge.shadow import Shadow

Environ = dict[str, Any]
TITLES = {1: "Tea", 2: "Milk"}


def legacy(environ: Environ, start_response: Any) -> list[bytes]:
    """/items/<id> as JSON with the item's title, and a query's ``lang`` echoed back."""
    while environ["wsgi.input"].read(65536):
        pass
    item_id = environ["PATH_INFO"].rsplit("/", 1)[-1]
    title = TITLES.get(int(item_id), "?") if item_id.isdigit() else "?"
    body = json.dumps({"id": item_id, "title": title}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def shadowed_app(fixed: bool = False, show_bodies: bool = True) -> Bridge:
    """A Bridge with one migrated route and one shadow route whose view shouts the title
    (the bug), unless ``fixed``."""
    bridge = Bridge(validator(legacy), max_threads=4, dashboard_path="/_bridge/")

    @bridge.route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return Response("ok")

    @bridge.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(show_bodies=show_bodies))
    async def item(request: Request, item_id: int) -> Response:
        title = TITLES.get(item_id, "?")
        data = {"id": str(item_id), "title": title if fixed else title.upper()}
        return Response(json.dumps(data), mimetype="application/json")

    return bridge


application = shadowed_app()
fixed_application = shadowed_app(fixed=True)
