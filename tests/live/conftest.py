"""Start real ASGI servers serving ``tests.live.suite_app:application`` on free loopback ports.

Each server runs in a subprocess in its own process group, so that a server that
forks workers (granian) is stopped whole; the group is always killed at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import accepts, poll_until_ready

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.live.suite_app:application"
MARKERS_ENV = "BRIDGE_LIVE_MARKERS"  # the same name as in suite_app
ROOT_PATH = "/app"
START_TIMEOUT = 20.0  # seconds; a cold start of granian on a busy 2-core machine takes ~2 s
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerSpec:
    """How to start one ASGI server, and what it is known to do differently."""

    name: str
    args: tuple[str, ...]  # after "python -m"; {port} is filled in
    root_path_args: tuple[str, ...]
    # True when a request names the root path in its URL (GET /app/x), as with
    # hypercorn, daphne and granian; False for uvicorn, which expects a proxy to have
    # removed it (GET /x) and puts it back in front of the scope's path.
    root_path_in_url: bool
    lifespan: bool  # the server runs the ASGI lifespan protocol
    # daphne (Twisted) receives the whole request body before it calls the application.
    whole_body_first: bool = False

    def command(self, port: int, root_path: str | None, app: str = APP) -> list[str]:
        args = [arg.format(port=port) for arg in self.args]
        if root_path is not None:
            args += [arg.format(root_path=root_path) for arg in self.root_path_args]
        return [sys.executable, "-m", *args, app]


SPECS = {
    spec.name: spec
    for spec in (
        *(
            ServerSpec(
                f"uvicorn-{parser}",
                (
                    "uvicorn",
                    "--http",
                    parser,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                    "--lifespan",
                    "on",
                    "--no-access-log",
                ),
                ("--root-path", "{root_path}"),
                root_path_in_url=False,
                lifespan=True,
            )
            for parser in ("httptools", "h11")
        ),
        ServerSpec(
            "hypercorn",
            ("hypercorn", "-b", "127.0.0.1:{port}"),
            ("--root-path", "{root_path}"),
            root_path_in_url=True,
            lifespan=True,
        ),
        ServerSpec(
            "daphne",
            ("daphne", "-b", "127.0.0.1", "-p", "{port}"),
            ("--root-path", "{root_path}"),
            root_path_in_url=True,
            lifespan=False,
            whole_body_first=True,
        ),
        ServerSpec(
            "granian",
            (
                "granian",
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--log-level",
                "warning",
            ),
            ("--url-path-prefix", "{root_path}"),
            root_path_in_url=True,
            lifespan=True,
        ),
    )
}
SERVERS = list(SPECS)


@dataclass
class LiveServer:
    """A running server: its base URL, its process and where its output goes."""

    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    markers: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """The server's stdout and stderr so far, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(server: LiveServer, timeout: float = START_TIMEOUT) -> None:
    """Poll a TCP connect, then ``GET /ping``, until the server answers or exits."""

    def ready() -> bool:
        accepts(server.port)
        return httpx.get(server.url + "/ping", timeout=2).status_code == 200

    poll_until_ready(server.process, ready, server.spec.name, server.output, timeout)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the server's whole process group (workers included) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    # Workers may outlive the leader; whatever is left of the group goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def run_server(
    name: str, workdir: Path, root_path: str | None = None, app: str = APP
) -> Iterator[LiveServer]:
    """Start the server ``name`` serving ``app`` (the suite app), wait until it answers
    ``GET /ping``, and stop it."""
    spec = SPECS[name]
    markers = workdir / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[MARKERS_ENV] = str(markers)
    env["PYTHONUNBUFFERED"] = "1"
    port = free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            spec.command(port, root_path, app),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole at the end
        )
    server = LiveServer(spec, port, process, log, markers)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_group(process)


@pytest.fixture(scope="module", params=SERVERS)
def server_name(request: pytest.FixtureRequest) -> str:
    """Each server in turn; module scope keeps the tests of one server together."""
    return str(request.param)


@pytest.fixture(scope="module")
def live_server(server_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per module and server name, shared by the tests that do not stop it."""
    with run_server(server_name, tmp_path_factory.mktemp(server_name)) as server:
        yield server


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=15) as client:
        yield client
