"""Instances of the migrated sample app under ``bridge serve --workers 2``, sharing one
Redis and one SQLite database, as two hosts behind a load balancer would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from sample_wsgi_app import SESSION_COOKIE, init_db, load_session
from tests.servers import free_port, running

APP = "sample_wsgi_app.modern:application"
SECRET = "scaleout-test-secret"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
WORKERS = 2
READY_TIMEOUT = 30.0  # seconds for every worker to start on a loaded 2-core machine


@contextlib.contextmanager
def instance(broadcast: str, data_dir: Path, log: Path, workers: int = WORKERS) -> Iterator[str]:
    """``bridge serve APP --workers N --broadcast URL`` on a free port; yields its URL."""
    port = free_port()
    args = ["bridge", "serve", APP, "--port", str(port), "--workers", str(workers),
            "--broadcast", broadcast, "--no-access-log"]  # fmt: skip
    env = {"SAMPLE_DATA_DIR": str(data_dir), "SAMPLE_SECRET_KEY": SECRET}
    with running(args, port, env=env, log=log) as process:
        wait_for_workers(process, log, workers)
        yield f"http://127.0.0.1:{port}"


def wait_for_workers(process: subprocess.Popen[bytes], log: Path, workers: int) -> None:
    """Wait until every worker has finished its lifespan startup (uvicorn logs each)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if text.count("Application startup complete") >= workers:
            return
        if process.poll() is not None:
            raise RuntimeError(f"bridge serve exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    raise RuntimeError(f"{workers} workers did not start within {READY_TIMEOUT} s:\n{text}")


def shared_data(directory: Path) -> Path:
    init_db(directory)
    return directory


async def login(http: httpx.AsyncClient) -> str:
    """Log in as admin through the legacy form; returns the session's CSRF token."""
    page = await http.get("/login")
    match = TOKEN_RE.search(page.text)
    assert match is not None, page.text
    form = {"username": "admin", "password": "admin", "csrf_token": match.group(1)}
    response = await http.post("/login", data=form)
    assert response.status_code == 303, response.text
    token: str = load_session(http.cookies[SESSION_COOKIE], SECRET)["csrf_token"]
    return token


async def create_through_form(http: httpx.AsyncClient, token: str, title: str) -> int:
    """POST the legacy "new item" form; returns the new item's id."""
    response = await http.post("/items/new", data={"title": title, "body": "", "csrf_token": token})
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


class SSEClient:
    """One event-stream client: reads ``id``/``event``/``data`` fields as they come."""

    def __init__(self, base: str, last_id: str | None = None) -> None:
        self.base = base
        self.headers = {"Last-Event-ID": last_id} if last_id else {}
        self.last_id = last_id
        self._stack = contextlib.AsyncExitStack()
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> SSEClient:
        http = await self._stack.enter_async_context(
            httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(20.0))
        )
        stream = await self._stack.enter_async_context(
            http.stream("GET", "/events/items", headers=self.headers)
        )
        assert stream.status_code == 200
        self._lines = stream.aiter_lines()
        assert (await self.next())[0] == "ready"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def next(self) -> tuple[str, Any]:
        """The next event as ``(event, data)``; remembers its id."""
        assert self._lines is not None
        event, data, event_id = "message", "", None
        async for line in self._lines:
            if line.startswith((":", "retry:")):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data = value
            elif field == "id":
                event_id = value
            elif line == "" and data:
                if event_id is not None:
                    self.last_id = event_id
                return event, json.loads(data)
        raise AssertionError("The event stream ended.")

    async def item(self) -> dict[str, Any]:
        event, data = await self.next()
        assert event == "item", (event, data)
        item: dict[str, Any] = data["item"]
        return item


class SocketClient:
    """One websocket client of ``/ws/items``."""

    def __init__(self, base: str) -> None:
        self.url = base.replace("http://", "ws://") + "/ws/items"
        self._stack = contextlib.AsyncExitStack()
        self._ws: Any = None

    async def __aenter__(self) -> SocketClient:
        self._ws = await self._stack.enter_async_context(
            websockets.connect(self.url, open_timeout=20)
        )
        assert json.loads(await self._ws.recv()) == {"type": "ready"}
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def item(self) -> dict[str, Any]:
        message = json.loads(await self._ws.recv())
        assert message["type"] == "item", message
        item: dict[str, Any] = message["item"]
        return item


async def items_of(clients: list[Any], count: int, timeout: float = 20.0) -> list[list[int]]:
    """The ids of the next ``count`` items each client receives."""

    async def one(client: Any) -> list[int]:
        return [(await client.item())["id"] for _ in range(count)]

    return await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), timeout)
