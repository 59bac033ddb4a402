"""The sample application served for real: each server with its own fresh data directory.

``python -m sample_wsgi_app init-db --data-dir D`` prepares each directory first, as a
deployment would, and every server signs sessions with the same ``SAMPLE_SECRET_KEY``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, running

SECRET = "sample-tests-secret"
INIT_TIMEOUT = 60.0  # seconds; three cold imports at once on a busy 2-core machine

# How each server is started, after "python -m"; {port} is filled in.
# gunicorn serves the WSGI callable itself: the legacy deployment, unchanged.
# uvicorn serves sample_wsgi_app/asgi.py, the one-line swap `application = Bridge(app)`.
# bridge serve wraps the same WSGI callable itself, and so does bridge's gunicorn worker.
SERVERS: dict[str, tuple[str, ...]] = {
    "gunicorn": (
        "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1", "--worker-class", "sync",
        "--graceful-timeout", "2", "sample_wsgi_app:app",
    ),
    "uvicorn": (
        "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log",
        "--log-level", "warning", "--timeout-graceful-shutdown", "2",
        "sample_wsgi_app.asgi:application",
    ),
    "bridge serve": (
        "bridge", "serve", "sample_wsgi_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--no-access-log", "--log-level", "warning", "--graceful-timeout", "2",
    ),
    # The one-flag migration: gunicorn's command line, bridge's worker, two processes.
    "gunicorn -k bridge.gunicorn.Worker": (
        "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "2",
        "--worker-class", "bridge.gunicorn.Worker", "--graceful-timeout", "2",
        "sample_wsgi_app:app",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Served:
    """One running server of the sample application."""

    name: str
    base_url: str
    data_dir: Path
    log: Path

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def server_env(data_dir: Path) -> dict[str, str]:
    # werkzeug builds a 405's Allow header from a set, ordered by the hash seed:
    # without a shared seed two processes of the same app may list methods differently.
    return {"SAMPLE_DATA_DIR": str(data_dir), "SAMPLE_SECRET_KEY": SECRET, "PYTHONHASHSEED": "0"}


def init_data(*data_dirs: Path) -> None:
    """Run ``init-db`` for every directory at once, and fail with its output if it fails."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sample_wsgi_app", "init-db", "--data-dir", str(path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **server_env(path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for path in data_dirs
    ]
    failures = []
    for process in processes:
        output, _ = process.communicate(timeout=INIT_TIMEOUT)
        if process.returncode:
            failures.append(output.decode(errors="replace"))
    assert not failures, "init-db failed:\n" + "\n".join(failures)


@contextlib.contextmanager
def serve(name: str, data_dir: Path, log_dir: Path) -> Iterator[Served]:
    """Run the sample app under the server ``name`` (a key of SERVERS) until the block ends."""
    port = free_port()
    args = [arg.replace("{port}", str(port)) for arg in SERVERS[name]]
    log = log_dir / f"{name.replace(' ', '-')}.log"
    served = Served(name, f"http://127.0.0.1:{port}", data_dir, log)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(running(args, port, env=server_env(data_dir), log=log))
        except (RuntimeError, TimeoutError) as exc:
            tail = served.log_tail()
            raise RuntimeError(f"{name} did not start: {exc} Its log ends with:\n{tail}") from exc
        yield served


@contextlib.contextmanager
def serve_all(names: tuple[str, ...], base: Path) -> Iterator[list[Served]]:
    """Serve the sample app under each named server, each with a fresh data directory."""
    data_dirs = [base / f"data-{name.replace(' ', '-')}" for name in names]
    init_data(*data_dirs)
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(serve(n, d, base)) for n, d in zip(names, data_dirs, strict=True)
        ]
        for server in servers:
            wait_healthy(server)
        yield servers


def wait_healthy(server: Served) -> None:
    """Wait for the first real answer: gunicorn accepts before its worker has booted."""
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        response = client.get("/health")
    assert response.status_code == 200, f"{server.name}: {response.text}\n{server.log_tail()}"


@pytest.fixture(scope="module")
def swap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    """The sample app under gunicorn, uvicorn + asgi.py, and bridge serve."""
    with serve_all(tuple(SERVERS), tmp_path_factory.mktemp("swap")) as servers:
        yield servers


@pytest.fixture(scope="module")
def bridge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The sample app through bridge: uvicorn serving ``sample_wsgi_app.asgi:application``."""
    with serve_all(("uvicorn",), tmp_path_factory.mktemp("browser")) as (server,):
        yield server
