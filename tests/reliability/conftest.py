"""A live uvicorn serving ``tests.reliability.apps``, and a raw HTTP/1.1 client for it.

The server runs in a subprocess in its own process group, on a free 127.0.0.1 port,
with its stdout and stderr in a file; the group is always killed at teardown. The
fixture exposes the server's pid (and a ``psutil.Process``) so that tests can read its
threads, open file descriptors and RSS. The raw client speaks bytes over a socket,
because the hostile input the tests send is exactly what a proper client refuses to.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.servers import poll_until_ready

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0  # seconds; a cold start on a busy 2-core machine takes ~1 s
STOP_TIMEOUT = 10.0

# Open files the server may use: 400 slow clients hold 400 sockets at once.
WANTED_NOFILE = 8192

# Level and logger name on every line, so that tests can tell an ERROR from a DEBUG
# and count tracebacks. The root logger catches bridge's and uvicorn's loggers alike.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
}


def raise_nofile_limit() -> None:
    """Raise this process's soft limit on open files towards ``WANTED_NOFILE``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running uvicorn: its port, process, and log file."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    records: Path
    _marks: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def mark(self) -> int:
        """The current end of the log; ``output_since(mark)`` reads what came after."""
        return self.log.stat().st_size

    def output_since(self, mark: int, settle: float = 0.2) -> str:
        """The log written after ``mark``, once the server has had ``settle`` s to write it."""
        time.sleep(settle)
        with open(self.log, "rb") as log:
            log.seek(mark)
            return log.read().decode("utf-8", errors="replace")

    def read_records(self) -> list[str]:
        if not self.records.exists():
            return []
        return self.records.read_text(encoding="utf-8").splitlines()

    def stats(self) -> dict[str, int]:
        """The counters of ``tests.reliability.apps`` (calls, closes, uploads)."""
        response = request(
            self.port, b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert response.status == 200, response
        data: dict[str, int] = json.loads(response.body)
        return data


def _server_preexec() -> None:
    raise_nofile_limit()


def wait_ready(server: Server, timeout: float = START_TIMEOUT) -> None:
    """Poll ``GET /ping`` until the server answers, or fail with its output."""

    def ready() -> bool:
        ping = request(server.port, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return ping.status == 200

    poll_until_ready(server.process, ready, "uvicorn", server.output, timeout)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the server's process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def run_server(app: str, workdir: Path, *args: str, sndbuf: int | None = None) -> Iterator[Server]:
    """Serve ``tests.reliability.apps:<app>`` with uvicorn until the block ends.

    ``sndbuf`` sets the send buffer of the listening socket, which accepted sockets
    inherit (Linux): without it, loopback autotuning lets the kernel absorb megabytes
    of a response that a slow client has not read, and hides who would wait for it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    records = workdir / "records.txt"
    log_config = workdir / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["BRIDGE_RELIABILITY_RECORDS"] = str(records)
    with contextlib.ExitStack() as stack:
        listener: socket.socket | None = None
        if sndbuf is None:
            port = free_port()
            where = ["--host", "127.0.0.1", "--port", str(port)]
        else:
            listener = stack.enter_context(socket.socket())
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            listener.bind(("127.0.0.1", 0))
            listener.listen(2048)
            port = int(listener.getsockname()[1])
            where = ["--fd", str(listener.fileno())]
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            f"tests.reliability.apps:{app}",
            *where,
            "--no-access-log",
            "--log-config",
            str(log_config),
            *args,
        ]
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole at the end
                preexec_fn=_server_preexec,  # only setrlimit before exec: safe here
                pass_fds=() if listener is None else (listener.fileno(),),
            )
    server = Server(port, process, log, records)
    try:
        wait_ready(server)
        yield server
    finally:
        kill_group(process)


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers for one test: ``start_server("load", "--http", "h11")``."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(app: str, *args: str, sndbuf: int | None = None) -> Server:
            nonlocal count
            count += 1
            workdir = tmp_path / f"server{count}"
            return stack.enter_context(run_server(app, workdir, *args, sndbuf=sndbuf))

        yield start


# -- a raw HTTP/1.1 client ----------------------------------------------------------------


@dataclass
class Response:
    """What came back on one connection, parsed as far as it goes."""

    status: int  # 0 when no status line arrived
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool  # the framing (Content-Length or the last chunk) was satisfied
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_response(raw: bytes, head_request: bool = False) -> Response:
    """Parse one response from the bytes received until the connection closed."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return Response(0, b"", [], b"", False, raw)
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else b""
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    response = Response(status, reason, headers, b"", False, raw)
    if head_request or status in (204, 304) or status < 200:
        response.complete = True
        return response
    length = response.header(b"content-length")
    if length is not None:
        response.body = rest[: int(length)]
        response.complete = len(rest) >= int(length)
        return response
    if (response.header(b"transfer-encoding") or b"").lower() == b"chunked":
        body, complete = decode_chunked(rest)
        response.body, response.complete = body, complete
        return response
    response.body = rest  # delimited by close: complete by definition
    response.complete = True
    return response


def decode_chunked(data: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; the flag says whether the terminating chunk arrived."""
    body = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end == -1:
            return bytes(body), False
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(body), data.find(b"\r\n", end + 2) != -1
        start = end + 2
        if len(data) < start + size + 2:
            body += data[start : start + size]
            return bytes(body), False
        body += data[start : start + size]
        pos = start + size + 2


def request(port: int, data: bytes, timeout: float = 10.0) -> Response:
    """Send raw bytes on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks), head_request=data.startswith(b"HEAD "))


def get(port: int, target: str, *headers: str) -> Response:
    """``GET target`` with ``Connection: close`` and extra ``"Name: value"`` headers."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
