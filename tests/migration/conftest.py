"""The sample application and its migrated entrypoint, in process and on real servers."""

from __future__ import annotations

import contextlib
import re
import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest

from bridge import Bridge, Broadcast
from sample_wsgi_app import SampleApp, create_app, init_db
from sample_wsgi_app.access_log import RequestLog
from sample_wsgi_app.modern import create_application
from tests.servers import free_port, running

SECRET = "migration-test-secret"
APP = "sample_wsgi_app.modern:application"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

# How each ASGI server is started on the migrated app (after "python -m").
SERVERS = {
    "uvicorn": ("uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log", APP),
    "hypercorn": ("hypercorn", "-b", "127.0.0.1:{port}", APP),
}


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[SampleApp]:
    """A fresh sample app whose legacy stack is checked by wsgiref's validator."""
    init_db(tmp_path)
    app = create_app(tmp_path, secret_key=SECRET)
    # Every WSGI call bridge makes, to the whole legacy stack or to a view in it, is
    # checked: validator goes outside the stack that create_application builds.
    wrap = app.wrap
    app.wrap = lambda inner, **options: validator(wrap(inner, **options))  # type: ignore[method-assign]
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def feed() -> Broadcast:
    return Broadcast("memory://")


@pytest.fixture
def modern(sample: SampleApp, feed: Broadcast) -> Iterator[RequestLog]:
    application = create_application(sample, broadcast=feed)
    try:
        yield application
    finally:
        bridge(application).pool.shutdown()


def bridge(application: RequestLog) -> Bridge:
    inner = application.app
    assert isinstance(inner, Bridge)
    return inner


@contextlib.asynccontextmanager
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in process, as a loopback client."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def login(http: httpx.AsyncClient, username: str = "admin") -> None:
    """Log in through the legacy form, as a browser does."""
    page = await http.get("/login")
    match = TOKEN_RE.search(page.text)
    assert match is not None
    form = {"username": username, "password": username, "csrf_token": match.group(1)}
    response = await http.post("/login", data=form)
    assert response.status_code == 303, response.text


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (servers started later inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"The open-file limit is {hard}; the test needs {wanted}.")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def live_server(server: str, data_dir: Path, log: Path | None = None) -> Iterator[str]:
    """Serve the migrated sample app with ``server``; yields its base URL."""
    init_db(data_dir)
    port = free_port()
    args = [arg.format(port=port) for arg in SERVERS[server]]
    env = {"SAMPLE_DATA_DIR": str(data_dir), "SAMPLE_SECRET_KEY": SECRET}
    with running(args, port, env=env, log=log):
        yield f"http://127.0.0.1:{port}"
