"""Logs where gunicorn users look: under ``gunicorn -k bridge.gunicorn.Worker`` a
legacy app's traceback is in ``--error-logfile``, once, in gunicorn's format; under
``bridge serve`` a failure after the headers is one traceback, not two lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serve.test_cli_live import ROOT, STARTUP_SECONDS, free_port, stop
from tests.servers import answers, poll_until_ready

pytestmark = pytest.mark.live

APP = "tests.apps.lifecycle_app:application"
INCOMPLETE = "ASGI callable returned without completing response."


def run_and_fail(argv: list[str], port: int, log: Path) -> None:
    """Start the server, ask for /boom and /cut, then stop it with SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        poll_until_ready(
            process, lambda: answers(base + "/"), "bridge", log.read_text, STARTUP_SECONDS
        )
        assert httpx.get(base + "/boom", timeout=10).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):  # the cut is visible to the client
            httpx.get(base + "/cut", timeout=10)
        process.terminate()
        process.wait(15)
    finally:
        stop(process)


def test_gunicorn_error_logfile_has_each_traceback_once_in_its_format(tmp_path: Path) -> None:
    port = free_port()
    errors = tmp_path / "errors.log"
    argv = [sys.executable, "-m", "gunicorn", "-k", "bridge.gunicorn.Worker",
            "-b", f"127.0.0.1:{port}", "--error-logfile", str(errors), APP]  # fmt: skip
    run_and_fail(argv, port, tmp_path / "output.log")
    text = errors.read_text()
    # gunicorn's format: [time] [pid] [LEVEL] message, then the traceback.
    assert re.search(r"^\[[^]]+\] \[\d+\] \[ERROR\] Exception in WSGI application GET /boom$",
                     text, re.M), text  # fmt: skip
    assert text.count("RuntimeError: the legacy app failed on purpose") == 1, text
    assert text.count("RuntimeError: the legacy app failed after its headers") == 1, text
    assert INCOMPLETE not in text
    # Nothing of bridge's goes to stderr bare.
    assert "Traceback" not in (tmp_path / "output.log").read_text()


def test_gunicorn_log_level_debug_shows_bridge_info_lines(tmp_path: Path) -> None:
    port = free_port()
    errors = tmp_path / "errors.log"
    argv = [sys.executable, "-m", "gunicorn", "-k", "bridge.gunicorn.Worker", "--log-level",
            "warning", "-b", f"127.0.0.1:{port}", "--error-logfile", str(errors), APP]  # fmt: skip
    run_and_fail(argv, port, tmp_path / "output.log")
    text = errors.read_text()
    assert "[ERROR] Exception in WSGI application GET /boom" in text
    assert "[INFO]" not in text  # --log-level warning holds for bridge's lines too


def test_bridge_serve_logs_a_cut_response_once(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "bridge", "serve", APP, "--port", str(port)]
    log = tmp_path / "output.log"
    run_and_fail(argv, port, log)
    text = log.read_text()
    assert text.count("RuntimeError: the legacy app failed after its headers") == 1, text
    assert INCOMPLETE not in text, text
    # uvicorn's format for bridge's lines too.
    assert "ERROR:    Exception in WSGI application GET /boom" in text, text


def served_access_lines(tmp_path: Path, *args: str) -> list[str]:
    """Run ``bridge serve`` with ``args``, send two requests, return its output lines."""
    port = free_port()
    argv = [sys.executable, "-m", "bridge", "serve", APP, "--port", str(port), *args]
    log = tmp_path / "output.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        poll_until_ready(
            process,
            lambda: answers(f"http://127.0.0.1:{port}/"),
            "bridge",
            log.read_text,
            STARTUP_SECONDS,
        )
        headers = {"user-agent": "lifecycle-test", "referer": "http://example.test/"}
        httpx.get(f"http://127.0.0.1:{port}/slow?0", headers=headers, timeout=5)
        process.terminate()
        process.wait(15)
    finally:
        stop(process)
    return log.read_text().splitlines()


# gunicorn's default access-log format: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
GUNICORN_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[[^]]+\] "GET /slow\?0 HTTP/1\.1" 200 \d+ "http://example\.test/" '
    r'"lifecycle-test"$'
)


def test_accesslog_dash_in_a_config_file_writes_gunicorns_format(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text('accesslog = "-"\n')
    lines = served_access_lines(tmp_path, "-c", "gunicorn.conf.py")
    assert [line for line in lines if GUNICORN_LINE.match(line)], lines
    assert not [line for line in lines if '"GET /slow?0 HTTP/1.1" 200 OK' in line]  # uvicorn's


def test_access_logformat_is_gunicorns(tmp_path: Path) -> None:
    lines = served_access_lines(tmp_path, "--access-logformat", "%(m)s %(U)s %(s)s %(a)s")
    assert "GET /slow 200 lifecycle-test" in lines, lines
