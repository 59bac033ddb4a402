"""``wsgi.multiprocess`` under ASGI servers run directly, each with its own supervisor."""

from __future__ import annotations

import httpx
import pytest

from bridge.wsgi.multiprocess import VARIABLE
from tests.servers import free_port, running

pytestmark = pytest.mark.live

APP = "tests.gunicorn.asgi:application"

COMMANDS = {
    "uvicorn -w 1": ("uvicorn", "--port", "{port}", "--log-level", "warning"),
    "uvicorn --workers 2": ("uvicorn", "--port", "{port}", "--workers", "2"),
    "hypercorn -w 2": ("hypercorn", "-b", "127.0.0.1:{port}", "-w", "2"),
    "granian --workers 2": (
        "granian", "--interface", "asgi", "--port", "{port}", "--workers", "2",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_multiprocess_follows_the_servers_worker_count(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    args = [arg.format(port=port) for arg in COMMANDS[name]]
    # Neither the variable bridge serve sets nor a platform's worker count.
    monkeypatch.setenv(VARIABLE, "")
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    with running([*args, APP], port):
        for _ in range(100):  # the port accepts before every worker has loaded the app
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
                break
            except httpx.TransportError:
                continue
        assert response.json()["multiprocess"] is ("2" in args)
