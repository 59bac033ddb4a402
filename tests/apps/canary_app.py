"""A canary route for the live tests: each answer names its arm and the worker's process id."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from wsgiref.validate import validator

from werkzeug.wrappers import Response

from bridge import Bridge, Canary, Request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def _legacy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    data = f"legacy|{os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


app = Bridge(
    validator(_legacy), max_threads=4, metrics_path="/_bridge/metrics", dashboard_path="/_bridge/"
)


@app.route("/split", methods=["GET"], canary=Canary(share=0.5, key="cookie:sid"))
async def split(request: Request) -> Response:
    return Response(f"view|{os.getpid()}", mimetype="text/plain")


@app.route("/control", methods=["POST"])
def control(request: Request) -> Response:
    """Sets the share from a worker thread, as a legacy admin view would."""
    app.canary("/split").set(float(request.args["share"]))
    return Response(str(os.getpid()), mimetype="text/plain")


@app.route("/setting", methods=["GET"])
async def setting(request: Request) -> Response:
    found = app.canary("/split")
    return Response(f"{found.state}|{found.share:g}|{os.getpid()}", mimetype="text/plain")
