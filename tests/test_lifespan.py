"""Lifespan: the server's state reaches mounted apps, hooks and views; trio is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from wsgiref.validate import validator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge import Bridge, Request

from .asgi import Client, http_scope

Environ = dict[str, Any]


def legacy(environ: Environ, start_response: Any) -> list[bytes]:
    state = environ["asgi.scope"].get("state", {})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"legacy sees {sorted(state)}".encode()]


class Server:
    """Plays an ASGI server's part in lifespan: one state dict, copied into each request."""

    def __init__(self, app: Bridge, *, with_state: bool = True) -> None:
        self.app = app
        self.state: dict[str, Any] | None = {} if with_state else None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def startup(self) -> dict[str, Any]:
        scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
        if self.state is not None:
            scope["state"] = self.state
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.send))
        self.inbox.put_nowait({"type": "lifespan.startup"})
        while not self.sent:
            await asyncio.sleep(0.001)
        return self.sent[-1]

    async def request(self, path: str) -> Client:
        scope = http_scope(path, raw_path=path.encode())
        if self.state is not None:
            scope["state"] = dict(self.state)  # ASGI: the server copies the state
        client = Client()
        await client.run(self.app, scope)
        return client

    async def shutdown(self) -> dict[str, Any]:
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        return self.sent[-1]


def starlette_app(events: list[str]) -> Starlette:
    """Starlette's documented pattern: the lifespan yields the state its requests read."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("open pool")
        yield {"db": "pool-1"}
        events.append("close pool")

    async def home(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(f"starlette sees {request.state.db}")

    return Starlette(routes=[Route("/", home)], lifespan=lifespan)


def test_a_mounted_starlette_app_gets_the_state_its_lifespan_yields() -> None:
    events: list[str] = []
    app = Bridge(validator(legacy))
    app.mount("/v2", starlette_app(events))

    async def main() -> None:
        server = Server(app)
        assert await server.startup() == {"type": "lifespan.startup.complete"}
        assert server.state == {"db": "pool-1"}
        mounted = await server.request("/v2/")
        assert (mounted.status, mounted.body) == (200, b"starlette sees pool-1")
        other = await server.request("/other")
        assert other.body == b"legacy sees ['db']"
        assert await server.shutdown() == {"type": "lifespan.shutdown.complete"}

    asyncio.run(main())
    assert events == ["open pool", "close pool"]


def test_a_server_without_state_still_gets_a_working_mount() -> None:
    """ASGI servers before lifespan state 2.3: bridge keeps the state and copies it."""
    events: list[str] = []
    app = Bridge(validator(legacy))
    app.mount("/v2", starlette_app(events))

    async def main() -> None:
        server = Server(app, with_state=False)
        assert await server.startup() == {"type": "lifespan.startup.complete"}
        mounted = await server.request("/v2/")
        assert (mounted.status, mounted.body) == (200, b"starlette sees pool-1")
        await server.shutdown()

    asyncio.run(main())


def test_hooks_that_take_an_argument_fill_the_state_views_read() -> None:
    seen: list[Any] = []

    def open_pool(state: dict[str, Any]) -> None:
        state["db"] = "pool-2"

    async def open_cache(state: dict[str, Any]) -> None:
        state["cache"] = "cache-1"

    def no_argument() -> None:
        seen.append("called")

    def close_pool(state: dict[str, Any]) -> None:
        seen.append(state["db"])

    app = Bridge(
        validator(legacy),
        on_startup=[open_pool, open_cache, no_argument],
        on_shutdown=[close_pool],
    )

    @app.route("/async")
    async def from_async(request: Request) -> str:
        return f"{request.state['db']} {request.state['cache']}"

    @app.route("/sync")
    def from_sync(request: Request) -> str:
        return str(request.state["db"])

    async def main() -> None:
        server = Server(app)
        await server.startup()
        assert (await server.request("/async")).body == b"pool-2 cache-1"
        assert (await server.request("/sync")).body == b"pool-2"
        assert (await server.request("/legacy")).body == b"legacy sees ['cache', 'db']"
        await server.shutdown()

    asyncio.run(main())
    assert seen == ["called", "pool-2"]


def test_request_state_is_empty_without_a_lifespan() -> None:
    app = Bridge(validator(legacy))

    @app.route("/state")
    async def view(request: Request) -> dict[str, Any]:
        return request.state

    client = Client()
    asyncio.run(client.run(app, http_scope("/state")))
    assert client.body == b"{}"


def test_a_failing_mounted_lifespan_fails_startup() -> None:
    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    app = Bridge(validator(legacy))
    app.mount("/v2", Starlette(lifespan=broken))

    async def main() -> dict[str, Any]:
        return await Server(app).startup()

    reply = asyncio.run(main())
    assert reply["type"] == "lifespan.startup.failed"
    assert "no database" in reply["message"]


def test_trio_is_refused_at_startup_with_a_sentence() -> None:
    """Under trio (hypercorn --worker-class trio) the server hears why, at startup."""
    trio = pytest.importorskip("trio")
    app = Bridge(validator(legacy))
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        messages = iter([{"type": "lifespan.startup"}])

        async def receive() -> dict[str, Any]:
            await trio.sleep(0)
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    trio.run(main)
    assert len(sent) == 1
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "bridge runs on asyncio only" in sent[0]["message"]
    assert "--worker-class asyncio" in sent[0]["message"]
