"""Noise cancellation over a real Flask app: a legacy JSON endpoint that stamps each answer
with the time and a request id. With ``Shadow(noise=True)`` the route reaches "ready to
switch" on the fields that matter, and a real difference still shows."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.shadow import Shadow
from tests.asgi import Client, http_scope

flask = pytest.importorskip("flask")


def legacy_flask() -> Any:
    app = flask.Flask("legacy")

    @app.get("/api/orders/<int:order_id>")
    def order(order_id: int) -> Any:
        return flask.jsonify(
            id=order_id,
            status="open",
            generated_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            request_id=uuid.uuid4().hex,
        )

    return app


def migrated(noise: bool, wrong_for: int = -1) -> Bridge:
    bridge = Bridge(legacy_flask(), max_threads=4, dashboard_path="/_bridge/")

    @bridge.route("/api/orders/<int:order_id>", methods=["GET"],
                  shadow=Shadow(noise=noise, ready_after=5))  # fmt: skip
    async def order(request: Request, order_id: int) -> Response:
        data = {
            "id": order_id,
            "status": "closed" if order_id == wrong_for else "open",
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "request_id": uuid.uuid4().hex,
        }
        return Response(json.dumps(data), mimetype="application/json")

    return bridge


def browse(bridge: Bridge, ids: list[int]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        for order_id in ids:
            client = Client()
            await client.run(bridge, http_scope(f"/api/orders/{order_id}"))
            assert client.status == 200
            await bridge.shadows.idle()
        data = Client()
        await data.run(bridge, http_scope("/_bridge/data.json"))
        (entry,) = json.loads(data.body)["shadow"]
        return dict(entry)

    return asyncio.run(go())


def test_stamped_answers_reach_ready_with_noise_and_never_without() -> None:
    with_noise = browse(migrated(noise=True), [1, 2, 3, 4, 5, 6])
    assert (with_noise["matched"], with_noise["mismatched"], with_noise["ready"]) == (6, 0, True)
    learned = {field["kind"] for field in with_noise["noise_fields"]}
    assert learned == {"body $.generated_at", "body $.request_id"}
    plain = browse(migrated(noise=False), [1, 2, 3, 4, 5, 6])
    assert (plain["matched"], plain["mismatched"], plain["ready"]) == (0, 6, False)
    (kind,) = plain["kinds"]  # six mismatches, one kind
    assert (kind["kind"], kind["count"]) == ("body $.generated_at; body $.request_id", 6)


def test_noise_does_not_hide_a_real_difference() -> None:
    entry = browse(migrated(noise=True, wrong_for=3), [1, 2, 3, 4])
    assert (entry["matched"], entry["mismatched"]) == (3, 1)
    (kind,) = entry["kinds"]
    assert kind["kind"] == "body $.status"
    assert kind["latest"]["differences"] == [
        {"where": "body $.status", "legacy": "a string of 4 chars", "shadow": "a string of 6 chars"}
    ]
