"""The route table: matching, method fallthrough, specificity, conflicts and mounts."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge, Request
from bridge.routing import Router, literal_prefix
from bridge.wsgi.environ import route_path

from .asgi import Client, http_scope


async def view(request: object) -> str:
    return "view"


async def other(request: object) -> str:
    return "other"


def test_literal_prefix() -> None:
    assert literal_prefix("/items/<int:item_id>") == "/items/"
    assert literal_prefix("/health") == "/health"
    assert literal_prefix("/<path:rest>") == "/"


def test_match_by_path_and_method() -> None:
    router = Router()
    router.add_route("/items/<int:item_id>", view, methods=["GET"])
    found = router.match_http("/items/7", "GET")
    assert found is not None and found[0].view is view and found[1] == {"item_id": 7}
    # HEAD comes with GET, as in werkzeug and Flask.
    assert router.match_http("/items/7", "HEAD") is not None
    # Same path, another method: not ours, the legacy app answers.
    assert router.match_http("/items/7", "POST") is None
    # Converter mismatch and unknown paths fall through too.
    assert router.match_http("/items/seven", "GET") is None
    assert router.match_http("/other", "GET") is None


def test_trailing_slash_redirect_is_not_a_match() -> None:
    router = Router()
    router.add_route("/reports/", view)
    assert router.match_http("/reports/", "GET") is not None
    assert router.match_http("/reports", "GET") is None


def test_most_specific_rule_wins() -> None:
    router = Router()
    router.add_route("/items/<name>", other)
    router.add_route("/items/new", view)
    found = router.match_http("/items/new", "GET")
    assert found is not None and found[0].view is view
    found = router.match_http("/items/old", "GET")
    assert found is not None and found[0].view is other


def test_same_rule_with_other_methods_is_fine() -> None:
    router = Router()
    router.add_route("/items", view, methods=["GET"])
    router.add_route("/items", other, methods=["POST"])
    assert router.match_http("/items", "POST")[0].view is other  # type: ignore[index]


def test_conflicts_are_reported_at_registration() -> None:
    router = Router()
    router.add_route("/items", view, methods=["GET", "POST"])
    with pytest.raises(ValueError, match='"/items" for POST is already served by view'):
        router.add_route("/items", other, methods=["POST", "PUT"])
    with pytest.raises(ValueError, match='"/items" for GET, HEAD, POST is already served'):
        router.add_route("/items", other)
    router.add_websocket("/ws", view)
    with pytest.raises(ValueError, match='websocket route "/ws" is already served'):
        router.add_websocket("/ws", other)
    router.add_mount("/v2", view)
    with pytest.raises(ValueError, match='already mounted at "/v2"'):
        router.add_mount("/v2/", other)


def test_bad_registrations_say_how_to_fix_them() -> None:
    router = Router()
    with pytest.raises(ValueError, match='must start with "/"'):
        router.add_route("items", view)
    with pytest.raises(TypeError, match="must be an async def function"):
        router.add_websocket("/ws", lambda ws: None)
    with pytest.raises(ValueError, match='must start with "/" and name a path'):
        router.add_mount("/", view)


def test_mounts_match_at_segment_boundaries_longest_first() -> None:
    router = Router()
    router.add_mount("/v2", view)
    router.add_mount("/v2/admin", other)
    assert router.match_mount("/v2") is not None
    assert router.match_mount("/v2/items").app is view  # type: ignore[union-attr]
    assert router.match_mount("/v2/admin/x").app is other  # type: ignore[union-attr]
    assert router.match_mount("/v2x") is None
    assert router.match_mount("/v") is None


def test_an_empty_router_is_inactive() -> None:
    router = Router()
    assert not router.active
    router.add_route("/x", view)
    assert router.active


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [("/app/items", "/app", "/items"), ("/items", "/app", "/items"), ("/app", "/app", "/")],
)
def test_route_path_strips_root_path(path: str, root_path: str, expected: str) -> None:
    assert route_path(http_scope(path, root_path=root_path)) == expected


# One path rule for routes, mounts and nested bridges, whatever the server's scope style.

# How each server fills path, raw_path and root_path for GET /app/v2/x served under
# the root path /app (uvicorn adds its --root-path in front of both, read from its
# source; hypercorn, daphne and granian take the URL as it came, root path included,
# as observed), and a scope from an older server whose path leaves the root path out.
SERVER_STYLES = {
    "uvicorn": {"path": "/app/v2/x", "raw_path": b"/app/v2/x", "root_path": "/app"},
    "hypercorn": {"path": "/app/v2/x", "raw_path": b"/app/v2/x", "root_path": "/app"},
    "daphne": {"path": "/app/v2/x", "raw_path": b"/app/v2/x", "root_path": "/app"},
    "granian": {"path": "/app/v2/x", "raw_path": b"/app/v2/x", "root_path": "/app"},
    "path without root_path": {"path": "/v2/x", "raw_path": b"/v2/x", "root_path": "/app"},
    "no root_path": {"path": "/v2/x", "raw_path": b"/v2/x", "root_path": ""},
    "prefix-stripping middleware": {
        "path": "/v2/x",
        "raw_path": b"/api/v2/x",
        "root_path": "",
    },
}


def show_path(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps([environ["SCRIPT_NAME"], environ["PATH_INFO"]]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.mark.parametrize("style", list(SERVER_STYLES))
def test_a_bridge_mounted_in_a_bridge_sees_the_path_below_its_prefix(style: str) -> None:
    inner = Bridge(validator(show_path))

    @inner.route("/routed")
    async def routed(request: Request) -> dict[str, str]:
        return {"path": request.path, "script_root": request.script_root}

    outer = Bridge(validator(show_path))
    outer.mount("/v2", inner)
    scope = {**http_scope(), **SERVER_STYLES[style]}
    root = SERVER_STYLES[style]["root_path"]
    client = Client()
    asyncio.run(client.run(outer, scope))
    assert json.loads(client.body) == [f"{root}/v2", "/x"]

    routed_scope = {
        **scope,
        "path": str(scope["path"]).replace("/x", "/routed"),
        "raw_path": bytes(scope["raw_path"]).replace(b"/x", b"/routed"),
    }
    client = Client()
    asyncio.run(client.run(outer, routed_scope))
    assert json.loads(client.body) == {"path": "/routed", "script_root": f"{root}/v2"}


def test_a_route_matches_the_rewritten_path_and_the_request_shows_it() -> None:
    app = Bridge(validator(show_path))

    @app.route("/users")
    async def users(request: Request) -> dict[str, str]:
        return {"path": request.path, "route_path": route_path(request.scope)}

    client = Client()
    asyncio.run(client.run(app, http_scope("/users", raw_path=b"/api/users")))
    assert json.loads(client.body) == {"path": "/users", "route_path": "/users"}
    legacy = Client()
    asyncio.run(legacy.run(app, http_scope("/accounts", raw_path=b"/api/accounts")))
    assert json.loads(legacy.body) == ["", "/accounts"]


def test_route_path_reads_raw_bytes_as_utf8_as_werkzeug_does() -> None:
    assert route_path(http_scope("/caf\u00e9", raw_path=b"/caf%C3%A9")) == "/caf\u00e9"
    assert route_path(http_scope("/\ufffd", raw_path=b"/%FF")) == "/\ufffd"
    assert route_path(http_scope("/app", root_path="/app", raw_path=b"/app")) == "/"
