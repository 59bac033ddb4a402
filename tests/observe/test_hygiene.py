"""Context hygiene: each request starts from a clean context, and the WSGI call, each
step of its iteration and ``close()`` run in one context."""

from __future__ import annotations

import asyncio
import contextvars
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.observe.hygiene import FreshContext

from ..servers import free_port, running

var = contextvars.ContextVar[str | None]("var", default=None)
around = contextvars.ContextVar[str | None]("around", default=None)


def get(app: Any, *paths: str) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            token = around.set(scope["path"])  # an outer middleware's value
            try:
                await app(scope, receive, send)
            finally:
                around.reset(token)

        transport = httpx.ASGITransport(wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return [await c.get(path) for path in paths]

    return asyncio.run(main())


class Steps:
    """A WSGI body that records the context each step and ``close()`` run in."""

    def __init__(self, seen: list[tuple[str, str | None, str | None]]) -> None:
        self.seen = seen
        self.steps = 0

    def __iter__(self) -> Steps:
        return self

    def __next__(self) -> bytes:
        self.seen.append((f"step {self.steps}", var.get(), around.get()))
        self.steps += 1
        if self.steps > 3:
            raise StopIteration
        var.set(f"set in step {self.steps - 1}")
        return b"x"

    def close(self) -> None:
        self.seen.append(("close", var.get(), around.get()))


def test_the_call_each_step_and_close_run_in_one_context() -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Steps:
        seen.append(("call", var.get(), around.get()))
        var.set("set in the call")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Steps(seen)

    [response] = get(Bridge(validator(app)), "/legacy")
    assert response.text == "xxx"
    assert seen == [
        ("call", None, "/legacy"),
        ("step 0", "set in the call", "/legacy"),
        ("step 1", "set in step 0", "/legacy"),
        ("step 2", "set in step 1", "/legacy"),
        ("step 3", "set in step 2", "/legacy"),
        ("close", "set in step 2", "/legacy"),
    ]


def test_a_sync_view_and_its_streamed_response_run_in_one_context() -> None:
    seen: list[tuple[str, str | None, str | None]] = []
    bridge = Bridge(validator(lambda environ, start_response: []))

    @bridge.route("/sync")
    def view(request: Request) -> Response:
        var.set("set in the view")
        return Response(Steps(seen))

    [response] = get(bridge, "/sync")
    assert response.text == "xxx"
    assert seen[0] == ("step 0", "set in the view", "/sync")
    assert seen[-1] == ("close", "set in step 2", "/sync")


def test_nothing_one_request_sets_reaches_the_next_on_the_same_thread() -> None:
    seen: list[tuple[str | None, int]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((var.get(), threading.get_ident()))
        var.set(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    bridge = Bridge(validator(app), max_threads=1, adaptive_threads=False)

    @bridge.route("/sync")
    def view(request: Request) -> str:
        seen.append((var.get(), threading.get_ident()))
        var.set("/sync")
        return "ok"

    get(bridge, "/first", "/sync", "/second", "/third")
    assert [value for value, _ in seen] == [None, None, None, None]
    assert len({thread for _, thread in seen}) == 1  # one thread served them all


def test_fresh_context_keeps_an_async_views_value_in_its_request() -> None:
    # httpx's ASGITransport runs every request in the client's own task, as daphne runs
    # a pipelined request in the context of the one before: the view's value would
    # reach the next request. FreshContext (what bridge serve puts around daphne) stops it.
    seen: list[tuple[str | None, str | None]] = []
    bridge = Bridge(validator(lambda environ, start_response: []))

    @bridge.route("/async")
    async def view(request: Request) -> str:
        seen.append((var.get(), around.get()))
        var.set("set in the async view")
        return "ok"

    get(FreshContext(bridge), "/async", "/async")
    assert seen == [(None, None), (None, None)]


# Live: requests pipelined on one connection, the case asyncio gets wrong (CPython
# #140947): the next request's task is created inside the one before it.

PIPELINED = ["/async", "/legacy/1", "/async", "/legacy/2", "/async"]


def pipelined(port: int, paths: list[str]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Send every request in one write; return each response's headers and JSON body."""
    request = b"".join(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % p.encode() for p in paths)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        responses: list[tuple[dict[str, str], dict[str, Any]]] = []
        while len(responses) < len(paths):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {len(responses)} responses"
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
                length = int(headers["content-length"])
                if len(rest) < length:
                    break
                responses.append((headers, json.loads(rest[:length])))
                data = rest[length:]
    return responses


APP = "tests.observe.context_app:application"
GUNICORN = ["gunicorn", "-k", "bridge.gunicorn.Worker", APP]


def command(server: str, port: int) -> list[str]:
    if server == "gunicorn worker":
        return [*GUNICORN, "-b", f"127.0.0.1:{port}"]
    return ["bridge", "serve", APP, "--server", server, "--port", str(port)]


SERVERS = ["uvicorn", "hypercorn", "daphne", "granian", "gunicorn worker"]


@pytest.fixture(params=SERVERS)
def server_port(request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    with running(command(request.param, port), port):
        yield port


@pytest.mark.live
def test_pipelined_requests_each_start_from_a_clean_context(server_port: int) -> None:
    responses = pipelined(server_port, PIPELINED)
    assert [headers["x-outer-before"] for headers, _ in responses] == ["-"] * len(PIPELINED)
    assert [body for _, body in responses] == [{"outer": path, "inner": None} for path in PIPELINED]


@pytest.mark.live
def test_keep_alive_requests_each_start_from_a_clean_context(server_port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server_port}") as client:
        for path in PIPELINED:
            response = client.get(path)
            assert response.headers["x-outer-before"] == "-"
            assert response.json() == {"outer": path, "inner": None}
