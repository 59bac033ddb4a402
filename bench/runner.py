"""Start and stop the contenders' servers, and run wrk against them with every response checked."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Every server started by this process, so that an interrupted run still kills them all.
_LIVE: list[Server] = []

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

# The wrk script: it sets the request (method, 1 MiB body for the upload), checks each
# response's status and body length in the response() hook, and prints the totals and
# the latency percentiles (the histogram that --latency prints) as one JSON line.
CHECK_LUA = r"""
local expected = tonumber(os.getenv("BENCH_EXPECT_LENGTH") or "-1")
local upload = tonumber(os.getenv("BENCH_UPLOAD_BYTES") or "0")
wrk.method = os.getenv("BENCH_METHOD") or "GET"
if upload > 0 then
  wrk.body = string.rep("x", upload)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
-- A fixed pause between a connection's requests offers every contender the same load,
-- so their latencies compare at one request rate rather than at each one's maximum.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then function delay() return pause end end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad_status = 0; bad_length = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then bad_status = bad_status + 1
  elseif expected >= 0 and #body ~= expected then bad_length = bad_length + 1
  else good = good + 1 end
end
function done(summary, latency, requests)
  local g, s, l = 0, 0, 0
  for _, t in ipairs(threads) do
    g = g + t:get("good"); s = s + t:get("bad_status"); l = l + t:get("bad_length")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "good": %d, "bad_status": %d, ' ..
    '"bad_length": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, g, s, l, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvicorn_loop() -> str:
    """uvloop where installed, else asyncio; every uvicorn contender gets the same."""
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def server_command(server: str, target: str, port: int, threads: int) -> list[str]:
    """The command line that serves ``target`` (``module:attr``) with one process and one worker."""
    python = sys.executable
    host = "127.0.0.1"
    if server == "uvicorn":
        return [
            python, "-m", "uvicorn", target, "--host", host, "--port", str(port),
            "--http", "httptools", "--loop", uvicorn_loop(),
            "--log-level", "warning", "--no-access-log", "--workers", "1",
        ]  # fmt: skip
    if server in ("gunicorn-sync", "gunicorn-gthread"):
        worker = ["-k", "sync"] if server == "gunicorn-sync" else ["-k", "gthread"]
        worker += ["--threads", str(threads)] if server == "gunicorn-gthread" else []
        return [
            python, "-m", "gunicorn", target, "-b", f"{host}:{port}", "-w", "1", *worker,
            "--log-level", "warning",
        ]  # fmt: skip
    if server == "granian":
        return [
            python, "-m", "granian", target, "--interface", "wsgi", "--host", host,
            "--port", str(port), "--workers", "1", "--blocking-threads", str(threads),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    if server == "granian-asgi":
        # granian runs an ASGI app on its own loop; blocking threads are a WSGI setting.
        return [
            python, "-m", "granian", target, "--interface", "asgi", "--host", host,
            "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    if server == "hypercorn":
        # hypercorn serves a WSGI callable itself (in a thread pool), an ASGI app on its loop.
        # It finds the app with eval() over the module's globals, which never reach a
        # module __getattr__; the call spells the lookup out.
        module, _, attr = target.partition(":")
        target = f"{module}:__getattr__({attr!r})"
        return [
            python, "-m", "hypercorn", target, "-b", f"{host}:{port}", "-w", "1",
            "-k", uvicorn_loop() if uvicorn_loop() == "uvloop" else "asyncio",
            "--log-level", "warning", "--backlog", "4096",
        ]  # fmt: skip
    if server == "daphne":
        return [python, "-m", "daphne", "-b", host, "-p", str(port), "-v", "0", target]
    if server == "gunicorn-asgi":
        return [
            python, "-m", "gunicorn", target, "-b", f"{host}:{port}", "-w", "1", "-k", "asgi",
            "--log-level", "warning",
        ]  # fmt: skip
    raise ValueError(
        f"Unknown server {server!r}; use one of uvicorn, granian(-asgi, -wsgi), hypercorn, "
        "daphne, gunicorn-sync, gunicorn-gthread or gunicorn-asgi."
    )


@dataclass
class Server:
    """One server process (and its children) on a free loopback port."""

    command: list[str]
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, ready_path: str) -> None:
        """Start the server and wait until ``ready_path`` answers with any HTTP response."""
        log = self.log.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one
            )
        finally:
            log.close()
        _LIVE.append(self)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The server exited with {self.process.returncode} before it was ready; "
                    f"see {self.log} for its output."
                )
            if _answers(self.port, ready_path):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"The server did not answer within {READY_TIMEOUT:.0f} s; see {self.log}."
        )

    def processes(self) -> list[psutil.Process]:
        """The server process and its children (gunicorn and granian fork workers)."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after a grace period."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # Workers that outlived their parent are still in the group.
        _signal_group(process.pid, signal.SIGKILL)
        self.process = None
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    """Kill every server this process started that is still running."""
    for server in list(_LIVE):
        server.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _answers(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles and every check it made."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    good: int
    bad_status: int
    bad_length: int
    socket_errors: dict[str, int]

    @property
    def valid(self) -> bool:
        """True when wrk got responses and every one had a 2xx status and the right length."""
        return self.good > 0 and self.bad_status == 0 and self.bad_length == 0


def run_wrk(
    script: Path,
    url: str,
    *,
    connections: int,
    seconds: int,
    expect_length: int,
    method: str = "GET",
    upload_bytes: int = 0,
    delay_ms: int = 0,
) -> WrkResult:
    """Run ``wrk -t1`` (wrk and the server share the machine's cores) and parse its JSON line."""
    env = {
        **os.environ,
        "BENCH_EXPECT_LENGTH": str(expect_length),
        "BENCH_METHOD": method,
        "BENCH_UPLOAD_BYTES": str(upload_bytes),
        "BENCH_DELAY_MS": str(delay_ms),
    }
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(
            f"wrk printed no result (exit {done.returncode}): {done.stdout}{done.stderr}"
        )
    errors = {key: int(data[key]) for key in ("connect", "read", "write", "timeout") if data[key]}
    return WrkResult(
        requests_per_second=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        good=int(data["good"]),
        bad_status=int(data["bad_status"]),
        bad_length=int(data["bad_length"]),
        socket_errors=errors,
    )
