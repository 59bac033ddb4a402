"""Start a real server in a subprocess on a free loopback port, and always stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    name: str,
    output: Callable[[], str] = lambda: "",
    timeout: float = 20.0,
) -> None:
    """Call ``ready()`` until it is true; fail with the server's output if it exits or hangs.

    ``ready`` may raise ``OSError`` (or an ``httpx`` error) while the server starts.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode} before it was ready; "
                f"its output:\n{output()}"
            )
        try:
            if ready():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} was not ready within {timeout} s; its output:\n{output()}")


def accepts(port: int) -> bool:
    """True once something accepts TCP connections on ``port``."""
    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


def answers(url: str) -> bool:
    """True once an HTTP request to ``url`` gets any answer."""
    httpx.get(url, timeout=5)
    return True


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``port``, or fail."""
    poll_until_ready(process, lambda: accepts(port), f"The server on port {port}", timeout=timeout)


@contextlib.contextmanager
def running(
    args: Sequence[str], port: int, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m args...`` in its own process group until the block ends."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log, "wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        try:
            wait_for_port(port, process)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of this process, on a free loopback port;
    yield its base URL once it has started, and stop it after."""
    import threading

    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level=log_level, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn in a thread did not start within 10 s.")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
