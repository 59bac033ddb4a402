"""Recycled workers are a non-event: two workers with ``--max-requests 20`` serve 400
requests with no failure, under each way bridge runs on gunicorn's or uvicorn's
supervisor, and the whole server's counters still add up to the requests sent while
the metrics directory stays small."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.serve.test_cli_live import ROOT, STARTUP_SECONDS, free_port, stop
from tests.servers import answers, poll_until_ready

pytestmark = pytest.mark.live

REQUESTS = 400
MAX_REQUESTS = 20
APPS = "tests.apps.lifecycle_app"
# Each live worker writes four files (counter, histogram, two live gauges); a worker
# that is retiring still has its own; the archive is two more.
MOST_FILES = 4 * 3 + 2
# Requests between two signals: enough that each replacement happens under load.
SIGNAL_EVERY = 60


def command(kind: str, app: str, port: int) -> list[str]:
    if kind == "gunicorn -k":
        return [sys.executable, "-m", "gunicorn", "-k", "bridge.gunicorn.Worker", "-w", "2",
                "--max-requests", str(MAX_REQUESTS), "-b", f"127.0.0.1:{port}", app]  # fmt: skip
    server = "gunicorn" if kind == "bridge serve --server gunicorn" else "uvicorn"
    return [sys.executable, "-m", "bridge", "serve", app, "--server", server, "--workers", "2",
            "--max-requests", str(MAX_REQUESTS), "--port", str(port)]  # fmt: skip


@contextmanager
def running(
    argv: list[str], port: int, log: Path, temporary: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS", "WEB_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["TMPDIR"] = str(temporary)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        poll_until_ready(
            process,
            lambda: answers(f"http://127.0.0.1:{port}/"),
            "bridge",
            log.read_text,
            STARTUP_SECONDS,
        )
        yield process
    finally:
        stop(process)


def answering_pid(url: str, failures: list[str]) -> str | None:
    """GET / on a new connection (so the kernel spreads them over the workers): the pid
    of the worker that answered, or None with the failure appended to ``failures``."""
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            response = client.get("/")
    except httpx.HTTPError as exc:
        failures.append(repr(exc))
        return None
    if response.status_code != 200:
        failures.append(str(response.status_code))
    return response.text.rsplit("|", 1)[-1]


def whole_server(directory: Path) -> dict[str, int]:
    """Requests by kind and shadow comparisons, summed by prometheus-client over the files."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counted: dict[str, int] = {}
    for family in MultiProcessCollector(None, path=str(directory)).collect():  # type: ignore[no-untyped-call]
        for sample in family.samples:
            if sample.name == "bridge_requests_total":
                key = sample.labels["kind"]
            elif sample.name == "bridge_shadow_comparisons_total":
                key = "comparisons"
            else:
                continue
            if sample.value:
                counted[key] = counted.get(key, 0) + int(sample.value)
    return counted


def metrics_directory(temporary: Path) -> Path:
    """The shared metrics directory bridge made (in the server's $TMPDIR)."""
    (directory,) = temporary.glob("bridge-metrics-*")
    return directory


@pytest.mark.parametrize(
    ("kind", "app"),
    [
        ("bridge serve", "application"),
        ("bridge serve", "bridged"),  # the module builds its own Bridge
        ("bridge serve --server gunicorn", "application"),
        ("bridge serve --server gunicorn", "bridged"),
        ("gunicorn -k", "application"),
        ("gunicorn -k", "bridged"),
    ],
)
def test_recycling_drops_nothing_and_the_counts_add_up(tmp_path: Path, kind: str, app: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    argv = command(kind, f"{APPS}:{app}", port)
    with running(argv, port, tmp_path / "server.log", temporary) as process:
        failures: list[str] = []
        pids: set[str] = set()
        for _ in range(REQUESTS):
            pid = answering_pid(url, failures)
            if pid is not None:
                pids.add(pid)
        assert failures == []
        assert len(pids) >= REQUESTS // MAX_REQUESTS // 2  # really recycled, many times
        assert process.poll() is None
        # Each worker adds its counts to the files four times a second, and a retiring
        # one before it exits: wait for the read that has every request (the readiness
        # probe, the 400, and the one that finds the directory).
        httpx.get(f"{url}/", timeout=10)
        directory = metrics_directory(temporary)
        sent = REQUESTS + 2
        # A shadow comparison ends after its response, so it may reach the files a
        # sync later than its request's count.
        compared = sent if app == "bridged" else 0
        counted = {}
        for _ in range(100):
            counted = whole_server(directory)
            answered = counted.get("legacy", 0) + counted.get("async", 0)
            if answered >= sent and counted.get("comparisons", 0) >= compared:
                break
            time.sleep(0.1)
        if app == "bridged":
            # The shadow route answers with the legacy app; each request is one comparison.
            assert counted == {"legacy": sent, "comparisons": sent}, counted
            text = httpx.get(f"{url}/_bridge/metrics", timeout=10).text
            assert 'bridge_requests_total{kind="legacy",route="/"} ' in text
        else:
            assert counted == {"legacy": sent}, counted
        files = list(directory.glob("*.db"))
        assert len(files) <= MOST_FILES, sorted(f.name for f in files)
        assert {"counter_archive.db", "histogram_archive.db"} <= {f.name for f in files}
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log


@pytest.mark.parametrize("kind", ["bridge serve", "bridge serve --server gunicorn", "gunicorn -k"])
def test_signals_replace_workers_under_load_and_drop_nothing(tmp_path: Path, kind: str) -> None:
    """SIGTERM to one worker, SIGHUP, SIGTTIN and SIGTTOU to the supervisor, each while
    two clients keep sending requests: every request is answered, the server lives."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    argv = command(kind, f"{APPS}:application", port)
    with running(argv, port, tmp_path / "server.log", temporary) as process:
        failures: list[str] = []
        pids: list[str] = []
        sent = [0]
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                pid = answering_pid(url, failures)
                if pid is not None:
                    pids.append(pid)
                sent[0] += 1

        clients = [threading.Thread(target=client) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
                before = sent[0]
                while sent[0] < before + SIGNAL_EVERY and process.poll() is None:
                    time.sleep(0.05)
                target = int(pids[-1]) if signum == signal.SIGTERM else process.pid
                os.kill(target, signum)
            before = sent[0]
            while sent[0] < before + SIGNAL_EVERY and process.poll() is None:
                time.sleep(0.05)
        finally:
            done.set()
            for thread in clients:
                thread.join(30)
        assert failures == []
        assert process.poll() is None
        assert len(set(pids)) >= 3  # workers really were replaced
