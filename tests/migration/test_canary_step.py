"""The canary step of docs/migration.md: the async item view answers a sticky share of the
sample application's item requests, falls back to the legacy view, and is switched live."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import Bridge, Canary
from sample_wsgi_app import SampleApp
from sample_wsgi_app.modern import create_application
from sample_wsgi_app.sessions import SESSION_COOKIE, dump_session
from tests.asgi import Client, http_scope

from .conftest import bridge as inner
from .test_shadow_step import ITEM_IDS, item_view  # 999 is missing: both answer 404

RULE = "/api/items/<int:item_id>"


async def fetch(app: Any, path: str, cookie: str | None = None) -> list[Any]:
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie else []
    client = Client()
    await client.run(app, http_scope(path, headers=headers))
    return client.sent


def view_requests(bridge: Bridge) -> int:
    count: int = bridge.canary(RULE).arms["view"].requests
    return count


def test_step2_canary_each_session_keeps_its_arm_and_both_answer_alike(sample: SampleApp) -> None:
    off = create_application(sample)
    on = create_application(sample, canary=Canary(share=0.5, key=f"cookie:{SESSION_COOKIE}"))
    bridge = inner(on)

    async def main() -> None:
        arms: dict[str, set[bool]] = {}
        for n in range(40):
            # A signed session of its own per visitor, as the legacy login would make.
            visitor = dump_session({"visit": n}, sample.settings.secret_key)
            for item_id in ITEM_IDS:
                before = view_requests(bridge)
                sent = await fetch(on, f"/api/items/{item_id}", visitor)
                arms.setdefault(visitor, set()).add(view_requests(bridge) > before)
                # Either arm answers what the legacy app alone answers, byte for byte.
                assert sent == await fetch(off, f"/api/items/{item_id}", visitor)
        assert all(len(found) == 1 for found in arms.values())  # one arm per session
        views = sum(found == {True} for found in arms.values())
        assert 8 <= views <= 32  # 20 % to 80 % of 40 visitors

    asyncio.run(main())
    inner(off).pool.shutdown()
    bridge.pool.shutdown()


def test_step2_canary_a_broken_view_is_covered_by_the_legacy_view(sample: SampleApp) -> None:
    """A view that raises: every client still gets the legacy answer, and the canary rolls
    itself back once the view has failed ``min_requests`` times."""
    off = create_application(sample)
    bridge = Bridge(sample.wrap(sample.dispatch, log_requests=False), max_threads=4)
    broken = item_view(sample, change=lambda data: data["no such field"])
    canary = Canary(share=1.0, max_error_rate=0.05, min_requests=10)
    bridge.route(RULE, methods=["GET"], canary=canary)(broken)

    async def main() -> None:
        for n in range(30):
            path = f"/api/items/{1 + n % 3}"  # items that exist: the view raises for each
            assert await fetch(bridge, path) == await fetch(off, path)

    asyncio.run(main())
    control = bridge.canary(RULE)
    assert (control.state, control.share) == ("rolled back", 0.0)
    view = control.arms["view"]
    assert (view.requests, view.errors, view.fallbacks) == (10, 10, 10)
    inner(off).pool.shutdown()
    bridge.pool.shutdown()


def test_step2_canary_is_raised_and_promoted_without_a_deploy(sample: SampleApp) -> None:
    on = create_application(sample, canary=0.0)
    bridge = inner(on)
    control = bridge.canary(RULE)

    async def main() -> None:
        await fetch(on, "/api/items/1")
        assert view_requests(bridge) == 0
        control.set(0.25)
        control.promote()
        for _ in range(5):
            await fetch(on, "/api/items/1")
        assert view_requests(bridge) == 5

    asyncio.run(main())
    assert (control.state, control.share) == ("promoted", 1.0)
    bridge.pool.shutdown()
