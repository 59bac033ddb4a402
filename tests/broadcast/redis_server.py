"""A real ``redis-server`` on a free loopback port, which a test may stop and start again."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port, poll_until_ready


class RedisServer:
    """``redis-server`` with no persistence, so a restart empties it, as a crash would."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "The broadcast tests need redis-server; scripts/test installs it "
                "(apt-get install redis-server)."
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        process = self.process
        poll_until_ready(process, self.ping, f"redis-server on port {self.port}", timeout=10)

    def ping(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()  # a crash, not a clean shutdown
            process.wait(10)

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """Stop the server without closing a connection (SIGSTOP): it accepts and reads
        nothing, answers nothing and refuses nothing, as a hung host does; SIGCONT after."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), 2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(64)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")
