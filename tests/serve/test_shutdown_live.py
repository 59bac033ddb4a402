"""SIGTERM is bounded as gunicorn bounds it: with an SSE client, a websocket and a slow
legacy request open, the server stops accepting, lets the request finish, ends the
stream with its final chunk and the websocket with a close frame at once, runs
``on_shutdown``, and exits well within ``--graceful-timeout``, with no traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.serve.test_cli_live import ROOT, STARTUP_SECONDS, free_port, stop
from tests.servers import answers, poll_until_ready

pytestmark = pytest.mark.live

APP = "tests.apps.lifecycle_app:bridged"
# Long enough that an SSE stream held until the bound would show; the slow request
# takes SLOW seconds, well within it.
GRACE = 10
SLOW = 2
# RFC 6455 section 7.4.1: 1012 is "service restart", uvicorn's close code on shutdown.
SERVICE_RESTART = 1012


def command(kind: str, port: int) -> list[str]:
    grace = ["--graceful-timeout", str(GRACE)]
    if kind == "gunicorn -k":
        return [sys.executable, "-m", "gunicorn", "-k", "bridge.gunicorn.Worker",
                "-b", f"127.0.0.1:{port}", *grace, APP]  # fmt: skip
    server = "gunicorn" if kind == "bridge serve --server gunicorn" else "uvicorn"
    return [sys.executable, "-m", "bridge", "serve", APP, "--server", server,
            "--port", str(port), *grace]  # fmt: skip


async def open_everything(base: str, process: subprocess.Popen[bytes]) -> tuple[object, ...]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        sse_open = asyncio.Event()

        async def sse() -> list[str]:
            events = []
            async with client.stream("GET", "/events") as response:
                # A truncated chunked body raises here; a clean end returns.
                async for line in response.aiter_lines():
                    if line:
                        events.append(line)
                        sse_open.set()
            return events

        async def slow() -> str:
            response = await client.get(f"/slow?{SLOW}")
            return f"{response.status_code} {response.text.split('|')[0]}"

        async def socket() -> int | None:
            url = base.replace("http://", "ws://") + "/ws"
            async with websockets.connect(url, open_timeout=20) as ws:
                assert await ws.recv() == "open"
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None
            return None

        tasks = [asyncio.ensure_future(job()) for job in (sse, slow, socket)]
        await asyncio.wait_for(sse_open.wait(), 20)
        await asyncio.sleep(0.5)  # the slow request is in its thread by now
        process.send_signal(signal.SIGTERM)
        return tuple(await asyncio.gather(*tasks))


@pytest.mark.parametrize("kind", ["bridge serve", "bridge serve --server gunicorn", "gunicorn -k"])
def test_sigterm_ends_streams_lets_requests_finish_and_runs_on_shutdown(
    tmp_path: Path, kind: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    record = tmp_path / "shutdown.txt"
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIFECYCLE_SHUTDOWN_FILE": str(record)}
    with log.open("wb") as out:
        process = subprocess.Popen(command(kind, port), cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        poll_until_ready(
            process, lambda: answers(base + "/"), "bridge", log.read_text, STARTUP_SECONDS
        )
        signalled = time.monotonic()
        events, slow, close_code = asyncio.run(open_everything(base, process))
        process.wait(GRACE + 1)
        elapsed = time.monotonic() - signalled
    finally:
        stop(process)
    output = log.read_text()
    assert events[0] == "data: open"  # and the body ended with its final chunk
    assert slow == "200 pid"
    assert close_code == SERVICE_RESTART
    # Well within the bound: the open stream and websocket did not hold the shutdown.
    assert elapsed < GRACE, output
    assert record.read_text().startswith("shutdown "), output
    assert "Traceback" not in output, output
    assert "Errno 9" not in output, output
