"""A shadow route is not migrated: the legacy app answers it, and nothing says otherwise."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.serve.cli import Recipe, build, main, startup_line
from bridge.serve.servers import ServerOptions
from tests.apps.shadow_apps import shadowed_app
from tests.asgi import Client, http_scope

APPS = "tests.apps.shadow_apps"


def test_the_startup_line_counts_shadow_routes_apart() -> None:
    built = build(Recipe(f"{APPS}:application"))
    assert startup_line(built, "uvicorn", ServerOptions()) == (
        f"bridge: serving {APPS}:application (Bridge, 4 threads) with uvicorn on "
        "http://127.0.0.1:8000, 1 worker, 1 route migrated, "
        "1 shadowed (answered by the legacy app)"
    )


def test_check_says_the_legacy_app_answers_a_shadow_route(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", f"{APPS}:application"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"  GET,HEAD /health -> {APPS}:shadowed_app.<locals>.health (async)" in lines
    assert (
        f"  GET,HEAD /items/<int:item_id> -> {APPS}:shadowed_app.<locals>.item "
        "(async view in the shadow; the legacy app answers)"
    ) in lines


def test_the_dashboard_counts_shadow_route_traffic_as_legacy() -> None:
    bridge = shadowed_app(fixed=True)

    async def go() -> dict[str, int]:
        for path in ("/items/1", "/items/2", "/health"):
            await Client().run(bridge, http_scope(path))
        await bridge.shadows.idle()
        data = Client()
        await data.run(bridge, http_scope("/_bridge/data.json"))
        totals: dict[str, int] = json.loads(data.body)["totals"]
        return totals

    assert asyncio.run(go()) == {"legacy": 2, "migrated": 1}
    assert bridge.shadows.routes[0].matched == 2
