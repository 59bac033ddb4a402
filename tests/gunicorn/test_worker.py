"""``bridge.gunicorn.Worker`` in process: how gunicorn's settings reach Bridge and uvicorn."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from bridge import Bridge
from bridge.serve.gunicorn_limits import GunicornLimits
from bridge.serve.worker import AccessLog, H11Worker, Worker, access_environ
from tests.apps import cli_apps

_made: list[Worker] = []


def make_worker(*argv: str, worker_class: type[Worker] = Worker) -> Worker:
    """A worker as gunicorn's arbiter builds one, from gunicorn's own parser and Config."""
    cfg = Config()
    args = cfg.parser().parse_args([*argv, "tests.apps.cli_apps:pid_app"])
    for name, value in vars(args).items():
        if value is not None and name != "args":
            cfg.set(name.lower(), value)
    cfg.set("wsgi_app", "tests.apps.cli_apps:pid_app")
    worker = worker_class(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    _made.append(worker)
    return worker


@pytest.fixture(autouse=True)
def _close_workers() -> Iterator[None]:
    yield
    while _made:
        _made.pop().tmp.close()  # the heartbeat file each gunicorn worker opens


def bridge_of(app: Any) -> Bridge:
    assert isinstance(app, AccessLog)
    assert isinstance(app.app, GunicornLimits)
    assert isinstance(app.app.app, Bridge)
    return app.app.app


def test_threads_become_max_threads() -> None:
    worker = make_worker("--threads", "8")
    assert bridge_of(worker.wrap(cli_apps.pid_app)).max_threads == 8


def test_gunicorns_default_of_one_thread_leaves_bridges_default() -> None:
    worker = make_worker()
    assert bridge_of(worker.wrap(cli_apps.pid_app)).max_threads == 32


def test_an_explicit_threads_1_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--threads 1")
    worker = make_worker("--threads", "1")
    assert bridge_of(worker.wrap(cli_apps.pid_app)).max_threads == 1


def test_limits_and_timeouts_are_mapped() -> None:
    worker = make_worker(
        "--limit-request-fields", "50", "--limit-request-line", "300",
        "--limit-request-field_size", "400", "--keep-alive", "7", "--graceful-timeout", "9",
        "--max-requests", "100", "--max-requests-jitter", "10", "--worker-connections", "77",
        "--forwarded-allow-ips", "10.0.0.1", "--websocket-max-message-size", "4096",
        "--root-path", "/api/",
    )  # fmt: skip
    app = worker.wrap(cli_apps.pid_app)
    assert bridge_of(app).limits.max_header_count == 50
    limits = app.app
    assert isinstance(limits, GunicornLimits)
    assert (limits.line, limits.fields, limits.field_size) == (300, 50, 400)
    config = worker.config
    assert config.timeout_keep_alive == 7
    assert config.timeout_graceful_shutdown == 9
    assert 100 <= config.limit_max_requests <= 110
    assert config.limit_concurrency == 77
    assert config.forwarded_allow_ips == ["10.0.0.1"]
    assert config.ws_max_size == 4096
    assert config.root_path == "/api"
    assert config.access_log is False  # bridge writes gunicorn's access lines instead
    assert config.http == "auto"
    assert make_worker(worker_class=H11Worker).config.http == "h11"


def test_a_bridge_passes_through_and_threads_are_warned_about() -> None:
    worker = make_worker("--threads", "8")
    warnings: list[str] = []
    worker.log.warning = lambda text, *args: warnings.append(text % args)  # type: ignore[method-assign]
    assert bridge_of(worker.wrap(cli_apps.bridged)) is cli_apps.bridged
    assert warnings == [
        '--threads 8 does not reach "tests.apps.cli_apps:pid_app", which builds its own Bridge '
        "(max_threads=4): set max_threads there, or drop --threads."
    ]


def test_access_environ_has_what_gunicorns_atoms_read() -> None:
    scope = {
        "type": "http", "method": "GET", "path": "/a b", "raw_path": b"/a%20b",
        "query_string": b"x=1", "http_version": "1.1", "client": ("10.1.1.1", 5000),
        "headers": [(b"user-agent", b"curl"), (b"referer", b"http://r/")],
    }  # fmt: skip
    assert access_environ(scope) == {  # type: ignore[arg-type]
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a%20b?x=1",
        "PATH_INFO": "/a b",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.1.1",
        "HTTP_USER_AGENT": "curl",
        "HTTP_REFERER": "http://r/",
    }
