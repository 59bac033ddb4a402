"""The route in the scope: what bridge writes for a migrated or shadow route, and what
it learns from a legacy framework's environ."""

from __future__ import annotations

import asyncio
from typing import Any
from wsgiref.validate import validator

from flask import Flask, request
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.observe import ROUTE_KEY, ScopeRoute
from bridge.observe.route import learned

from ..asgi import Client, http_scope


def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"legacy"]


def serve(app: Bridge, path: str) -> dict[str, Any]:
    scope = http_scope(path)
    asyncio.run(Client().run(app, scope))
    return scope


def test_a_migrated_route_writes_its_rule_and_view_into_the_scope() -> None:
    bridge = Bridge(validator(legacy))

    @bridge.route("/items/<int:item_id>")
    async def item(request: Request, item_id: int) -> Response:
        return Response("item")

    scope = serve(bridge, "/items/7")
    assert scope["route"] == ScopeRoute("/items/<int:item_id>", "/items/<int:item_id>")
    assert scope["endpoint"] is item


def test_a_shadow_route_writes_its_rule_but_no_endpoint() -> None:
    bridge = Bridge(validator(legacy))

    @bridge.route("/items/<int:item_id>", methods=["GET"], shadow=True)
    async def item(request: Request, item_id: int) -> Response:
        return Response("legacy")

    scope = serve(bridge, "/items/7")
    assert scope["route"].path == "/items/<int:item_id>"
    assert "endpoint" not in scope  # the legacy app answered


def test_a_legacy_request_writes_nothing_when_nobody_traces() -> None:
    scope = serve(Bridge(validator(legacy)), "/items/7")
    assert "route" not in scope and "endpoint" not in scope


def test_learned_reads_the_route_key_then_flasks_url_rule() -> None:
    flask_app = Flask("legacy")
    found: list[str | None] = []

    @flask_app.get("/flask/<int:n>")
    def view(n: int) -> str:
        found.append(learned(request.environ))
        request.environ[ROUTE_KEY] = "/set/<id>"
        found.append(learned(request.environ))
        return "ok"

    environ = EnvironBuilder("/flask/3").get_environ()
    flask_app(environ, lambda status, headers, exc_info=None: None)
    assert found == ["/flask/<int:n>", "/set/<id>"]
    del environ[ROUTE_KEY]
    assert learned(environ) is None  # Flask forgot its request when the call returned


# RouteMiddleware runs in a real Django project in test_live.py (Django's settings are
# global to a process).
