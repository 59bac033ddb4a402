"""256 MiB up and 256 MiB down through a live uvicorn, with bounded memory."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from .apps.memory_app import CHUNK
from .servers import free_port, running

SIZE = 256 * 1024 * 1024
LIMIT = 32 * 1024 * 1024


class PeakRSS:
    """Samples a process's resident set size every 10 ms in a background thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = free_port()
    args = ["uvicorn", "tests.apps.memory_app:application", "--port", str(port)]
    with running([*args, "--no-access-log", "--log-level", "warning"], port) as process:
        url = f"http://127.0.0.1:{port}"
        # Warm up: the first requests import and allocate what later ones reuse.
        with httpx.Client(base_url=url) as client:
            client.get("/?1048576").raise_for_status()
            client.post("/upload", content=b"x" * 1024 * 1024).raise_for_status()
        yield url, process.pid


@pytest.mark.live
def test_256_mib_download_streams_with_bounded_memory(server: tuple[str, int]) -> None:
    url, pid = server
    digest = hashlib.sha256()
    total = 0
    with (
        PeakRSS(pid) as rss,
        httpx.Client(base_url=url, timeout=60) as client,
        client.stream("GET", f"/?{SIZE}") as response,
    ):
        for chunk in response.iter_raw(1024 * 1024):
            digest.update(chunk)
            total += len(chunk)
    assert total == SIZE
    assert digest.hexdigest() == hashlib.sha256(CHUNK * (SIZE // len(CHUNK))).hexdigest()
    assert rss.growth < LIMIT, f"RSS grew by {rss.growth / 2**20:.1f} MiB"


@pytest.mark.live
def test_256_mib_upload_streams_with_bounded_memory(server: tuple[str, int]) -> None:
    url, pid = server
    block = b"\xa5" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(SIZE // len(block)):
            yield block

    started = time.monotonic()
    with PeakRSS(pid) as rss, httpx.Client(base_url=url, timeout=60) as client:
        reply = client.post("/upload", content=body(), headers={"Content-Length": str(SIZE)})
    expected = hashlib.sha256(block * (SIZE // len(block))).hexdigest()
    assert reply.text == f"{SIZE} {expected}"
    assert rss.growth < LIMIT, f"RSS grew by {rss.growth / 2**20:.1f} MiB"
    assert time.monotonic() - started < 60
