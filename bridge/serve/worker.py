"""``gunicorn -k bridge.gunicorn.Worker myproject.wsgi:application``: bridge as a gunicorn worker.

Built on the ``uvicorn-worker`` package (uvicorn's own gunicorn worker, maintained by the
uvicorn team): gunicorn's arbiter keeps its job (binding, forking, the server hooks,
SIGHUP, SIGTTIN/SIGTTOU, ``--timeout`` heartbeats, ``--max-requests`` recycling) and each
worker serves the app with uvicorn's HTTP protocols, the ones the rest of bridge is
tested on. What this module adds, each because gunicorn's meaning would be lost otherwise:

- the app string names a WSGI callable, as it did under gunicorn; it is wrapped in
  ``Bridge`` with ``--threads`` as ``max_threads`` and ``--limit-request-fields`` as
  ``max_header_count`` (an ASGI app or a ``Bridge`` passes through unchanged);
- ``--limit-request-line`` and ``--limit-request-field_size`` are checked as gunicorn
  does, with its 414 and 431 answers (uvicorn has no such limits);
- the access log is gunicorn's, in its ``--access-logformat``;
- SIGINT and SIGQUIT run the ``worker_int`` hook, and a worker stopped by a signal
  returns normally, so gunicorn's ``worker_exit`` hook runs too;
- ``wsgi.multiprocess`` is true when gunicorn runs more than one worker.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any, ClassVar

from uvicorn.server import Server as UvicornServer
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from .._types import ASGIApp, Receive, Scope, Send
from ..threads.pool import DEFAULT_MAX_THREADS
from ..wsgi.multiprocess import VARIABLE as MULTIPROCESS_VARIABLE
from .gunicorn_limits import GunicornLimits
from .importer import wrap_app

# Seconds a retiring worker keeps reading connections it has just accepted (see
# _Server.shutdown); a request already sent arrives within milliseconds on loopback.
ACCEPTED_GRACE = 0.1

# gunicorn's own default for --threads; see ``threads_given``.
GUNICORN_DEFAULT_THREADS = 1


class Worker(UvicornWorker):  # type: ignore[misc]
    """A gunicorn worker class that serves a WSGI app through ``Bridge`` on uvicorn."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": "auto"}
    # True under ``bridge serve --server gunicorn``, whose app arrives already built
    # (threads and limits applied): the worker then only adds gunicorn's access log.
    built_by_bridge: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        config = self.config
        # Each response is logged by AccessLog below, in gunicorn's format; uvicorn's own
        # access logger (which uvicorn-worker points at gunicorn's handlers) stays quiet.
        config.access_log = False
        logging.getLogger("uvicorn.access").handlers = []
        config.timeout_graceful_shutdown = max(1, int(cfg.graceful_timeout))
        # gunicorn's worker_connections: the most clients an async worker serves at once.
        config.limit_concurrency = cfg.worker_connections
        ws_max_size = getattr(cfg, "websocket_max_message_size", None)  # gunicorn 24+
        if ws_max_size:
            config.ws_max_size = ws_max_size
        root_path = getattr(cfg, "root_path", "")  # a gunicorn 24+ setting
        if root_path:
            config.root_path = root_path.rstrip("/")
        # h11 refuses a request head past this size; make room for what gunicorn allows.
        if cfg.limit_request_line and cfg.limit_request_field_size:
            head = cfg.limit_request_line + cfg.limit_request_fields * (
                cfg.limit_request_field_size + 2
            )
            config.h11_max_incomplete_event_size = max(head, 16 * 1024)
        self._serving = False

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Runs in the arbiter before any worker starts (and before ``--preload`` loads)."""
        # PEP 3333: wsgi.multiprocess is true when "an equivalent application object may
        # be simultaneously invoked by another process".
        os.environ[MULTIPROCESS_VARIABLE] = "1" if cfg.workers > 1 else "0"
        if cfg.threads < 1:
            log.warning(
                "--threads %s must be 1 or more; bridge uses its default of %s threads.",
                cfg.threads,
                DEFAULT_MAX_THREADS,
            )

    def load_wsgi(self) -> None:
        super().load_wsgi()
        if self.built_by_bridge:
            self.wsgi: ASGIApp = AccessLog(self.wsgi, self.log)
        else:
            self.wsgi = self.wrap(self.wsgi)

    def wrap(self, obj: object) -> ASGIApp:
        """The served ASGI app: ``obj`` in ``Bridge`` when it is WSGI, then gunicorn's limits."""
        cfg = self.cfg
        # gunicorn keeps the app string from its command line on the application.
        text = getattr(self.app, "app_uri", None) or cfg.wsgi_app or "the application"
        threads = cfg.threads if threads_given(cfg.threads) and cfg.threads >= 1 else None
        loaded = wrap_app(
            obj, text, threads=threads, options={"max_header_count": cfg.limit_request_fields}
        )
        if loaded.kind != "wsgi" and threads is not None:
            self.log.warning(
                '--threads %s does not reach "%s", which builds its own Bridge '
                "(max_threads=%s): set max_threads there, or drop --threads.",
                threads,
                text,
                loaded.bridge.max_threads if loaded.bridge is not None else "none",
            )
        app: ASGIApp = GunicornLimits(
            loaded.app,
            line=cfg.limit_request_line,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size,
        )
        return AccessLog(app, self.log)

    def init_signals(self) -> None:
        super().init_signals()
        # uvicorn restores these handlers after it has shut down and then raises the
        # signal it caught again; with gunicorn's SIG_DFL the worker would die of it
        # before gunicorn's worker_exit hook could run.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._handle_signal)

    def _handle_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._serving:
            return  # uvicorn raising the signal again after its shutdown: done.
        # Still loading the app: stop here, as gunicorn's own workers do.
        self.alive = False
        if sig != signal.SIGTERM:
            self.cfg.worker_int(self)
        sys.exit(0)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(self.config, self)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, server.handle_exit, signal.SIGQUIT, None)
        self._serving = True
        await server.serve(sockets=self.sockets)
        if not server.started:
            from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]

            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class H11Worker(Worker):
    """The same worker on uvicorn's pure-Python h11 protocol instead of httptools."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "asyncio", "http": "h11"}


class _Server(UvicornServer):
    """uvicorn's server, with gunicorn's meaning for SIGINT and SIGQUIT."""

    def __init__(self, config: Any, worker: Worker) -> None:
        super().__init__(config)
        self.worker = worker

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        # Stop accepting first, then let connections accepted a moment ago read their
        # request: uvicorn would close them unread, and their clients would see a reset
        # on SIGHUP or --max-requests, where gunicorn's own workers answer them.
        for server in self.servers:
            server.close()
        await asyncio.sleep(ACCEPTED_GRACE)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        if sig in (signal.SIGINT, signal.SIGQUIT) and first:
            self.worker.cfg.worker_int(self.worker)
        super().handle_exit(sig, frame)
        # gunicorn: SIGTERM drains within --graceful-timeout, SIGINT and SIGQUIT stop now.
        # In-flight requests are cut rather than awaited, but the lifespan shutdown still
        # runs, so the app's on_shutdown hooks can close what they opened.
        if sig in (signal.SIGINT, signal.SIGQUIT):
            self.config.timeout_graceful_shutdown = 0


def threads_given(value: int) -> bool:
    """Whether ``--threads`` was asked for, rather than gunicorn's default of 1.

    gunicorn's default of one thread is its sync worker serving one request at a time;
    this worker is asynchronous, so without ``--threads`` the legacy app gets bridge's
    default pool. An explicit ``--threads 1`` on the command line (or in
    ``GUNICORN_CMD_ARGS``) is honoured.
    """
    if value != GUNICORN_DEFAULT_THREADS:
        return True
    words = [*sys.argv[1:], *shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))]
    return any(word == "--threads" or word.startswith("--threads=") for word in words)


class _Response:
    """What gunicorn's access log reads from a response: status, headers, bytes sent."""

    def __init__(self) -> None:
        self.status = "-"
        self.headers: list[tuple[str, str]] = []
        self.sent = 0


class AccessLog:
    """One line per HTTP response through gunicorn's logger, so ``--access-logformat`` holds."""

    def __init__(self, app: ASGIApp, log: Any) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not getattr(self.log, "access_log_enabled", True):
            await self.app(scope, receive, send)
            return
        response = _Response()
        started = time.monotonic()

        async def logged_send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = str(message["status"])
                response.headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers", [])
                ]
            elif message["type"] == "http.response.body":
                response.sent += len(message.get("body", b""))
            await send(message)  # type: ignore[arg-type]

        try:
            await self.app(scope, receive, logged_send)
        finally:
            elapsed = datetime.timedelta(seconds=time.monotonic() - started)
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
            self.log.access(response, headers, access_environ(scope), elapsed)


def access_environ(scope: Scope) -> dict[str, str]:
    """The environ keys gunicorn's access log atoms read, from an ASGI scope."""
    target = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": target + ("?" + query if query else ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
    for name, value in scope["headers"]:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if key in ("HTTP_REFERER", "HTTP_USER_AGENT", "HTTP_AUTHORIZATION"):
            environ[key] = value.decode("latin-1")
    return environ
