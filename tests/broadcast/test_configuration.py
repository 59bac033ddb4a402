"""How an app gets its ``Broadcast``: ``Bridge(broadcast=)``, ``$BRIDGE_BROADCAST_URL``,
``bridge serve --broadcast``, and the lifespan that starts and stops it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge import Bridge, Broadcast
from bridge.serve.cli import Recipe, build, main
from tests.metrics.test_websocket_metrics import hello_wsgi

APPS = "tests.apps.cli_apps"


def test_the_default_is_memory_and_one_broadcast_per_bridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BRIDGE_BROADCAST_URL", raising=False)
    app = Bridge(hello_wsgi)
    assert isinstance(app.broadcast, Broadcast)
    assert app.broadcast.url == "memory://"
    assert Bridge(hello_wsgi).broadcast is not app.broadcast
    shared = Broadcast("memory://")
    assert Bridge(hello_wsgi, broadcast=shared).broadcast is shared
    assert Bridge(hello_wsgi, broadcast="redis://127.0.0.1:1/0").broadcast.url == (
        "redis://127.0.0.1:1/0"
    )


def test_the_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_BROADCAST_URL", "redis://127.0.0.1:1/3")
    assert Bridge(hello_wsgi).broadcast.url == "redis://127.0.0.1:1/3"
    # An explicit argument wins.
    assert Bridge(hello_wsgi, broadcast="memory://").broadcast.url == "memory://"


def test_the_serve_recipe_carries_the_url_to_each_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # build() sets the variable, as it does in each worker; monkeypatch restores it.
    monkeypatch.setenv("BRIDGE_BROADCAST_URL", "")
    built = build(Recipe(f"{APPS}:pid_app", broadcast="redis://127.0.0.1:1/5"))
    assert built.loaded.bridge is not None
    assert built.loaded.bridge.broadcast.url == "redis://127.0.0.1:1/5"


def test_a_bad_broadcast_url_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_BROADCAST_URL", raising=False)
    assert main(["serve", f"{APPS}:pid_app", "--broadcast", "amqp://rabbit"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'bridge: error: --broadcast: Broadcast URL "amqp://rabbit" must start with memory:// '
        "or redis:// (also rediss://, unix:// or valkey://), such as "
        '"redis://127.0.0.1:6379/0".'
    ]


def test_lifespan_starts_and_stops_the_broadcast() -> None:
    app = Bridge(hello_wsgi, broadcast="memory://")

    async def main() -> list[str]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[str] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        inbox.put_nowait({"type": "lifespan.startup"})
        running = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, send))
        while not sent:
            await asyncio.sleep(0.01)
        async with app.broadcast.subscribe("items") as sub:
            await app.broadcast.publish("items", 1)
            assert (await sub.get()).data == 1
            inbox.put_nowait({"type": "lifespan.shutdown"})
            await asyncio.wait_for(running, 10)
            assert sub.closed  # a server stopping ends every live stream
        return sent

    assert asyncio.run(main()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_several_workers_on_memory_with_websockets_are_warned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.serve.cli import broadcast_warning

    monkeypatch.setenv("BRIDGE_BROADCAST_URL", "")
    live = build(Recipe("sample_wsgi_app.modern:application"))
    warning = broadcast_warning(live, 2)
    assert warning is not None
    assert warning.startswith("live events on memory:// reach only the clients of the worker")
    assert "--broadcast redis://HOST:6379/0" in warning
    assert broadcast_warning(live, 1) is None
    on_redis = build(Recipe(f"{APPS}:pid_app", broadcast="redis://127.0.0.1:1/0"))
    assert broadcast_warning(on_redis, 4) is None
    plain = build(Recipe(f"{APPS}:pid_app"))  # no websocket route
    assert broadcast_warning(plain, 4) is None
