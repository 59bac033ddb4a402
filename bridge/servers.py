"""One small adapter per ASGI server: how uvicorn, hypercorn, granian and daphne run an app.

Each adapter receives a factory import string (``module:function``) that builds the ASGI
app, because every multi-process manager here starts fresh interpreters that must import
the app themselves; in a single process the factory hands back the app already loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Option names a server may lack; ``check_supported`` refuses one that was asked for.
OPTIONAL = (
    "uds",
    "workers",
    "reload",
    "timeout_keep_alive",
    "graceful_timeout",
    "limit_concurrency",
    "max_requests",
)


@dataclass(frozen=True)
class ServerOptions:
    """What ``bridge serve`` asks of a server; ``None`` means the server's own default."""

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    workers: int = 1
    root_path: str = ""
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    timeout_keep_alive: float | None = None
    graceful_timeout: float | None = None
    limit_concurrency: int | None = None
    max_requests: int | None = None
    log_level: str = "info"
    access_log: bool = True
    reload: bool = False


class ServerError(Exception):
    """The chosen server is missing or cannot do what was asked; the message names the fix."""


@dataclass(frozen=True)
class Server:
    """An adapter: the package to install, what it supports, and how to run a factory string."""

    name: str
    package: str
    supports: frozenset[str]
    # Servers without their own X-Forwarded-* handling get uvicorn's middleware around the app.
    native_proxy_headers: bool
    sighup: bool
    run: Callable[[str, ServerOptions], None]

    def check_installed(self) -> None:
        if importlib.util.find_spec(self.package) is None:
            raise ServerError(
                f"--server {self.name} needs the {self.package} package: pip install {self.package}"
            )

    def check_supported(self, options: ServerOptions) -> None:
        defaults = ServerOptions()
        for name in OPTIONAL:
            asked = getattr(options, name)
            if name not in self.supports and asked not in (getattr(defaults, name), None):
                flag = "--" + name.replace("_", "-")
                others = ", ".join(s.name for s in SERVERS.values() if name in s.supports)
                raise ServerError(
                    f"{self.name} does not support {flag}; drop it or choose --server {others}."
                )


def _run_uvicorn(factory: str, o: ServerOptions) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    kwargs = {
        "factory": True,
        "host": o.host,
        "port": o.port,
        "uds": o.uds,
        "workers": o.workers,
        "reload": o.reload,
        "root_path": o.root_path,
        "proxy_headers": o.proxy_headers,
        "forwarded_allow_ips": o.forwarded_allow_ips,
        "timeout_keep_alive": 5 if o.timeout_keep_alive is None else int(o.timeout_keep_alive),
        "timeout_graceful_shutdown": (
            None if o.graceful_timeout is None else int(o.graceful_timeout)
        ),
        "limit_concurrency": o.limit_concurrency,
        "limit_max_requests": o.max_requests,
        "log_level": o.log_level,
        "access_log": o.access_log,
    }
    if o.workers > 1 or o.reload or o.max_requests is None:
        # uvicorn's own supervisor runs when workers > 1, its reloader with reload.
        uvicorn.run(factory, **kwargs)  # type: ignore[arg-type]
        return
    # One worker with --max-requests still gets uvicorn's supervisor, so a worker that
    # retires after its quota is replaced, as gunicorn does, instead of ending the server.
    config = uvicorn.Config(factory, **kwargs)  # type: ignore[arg-type]
    sock = config.bind_socket()
    try:
        # Older uvicorn releases took the worker target; newer ones build it from config.
        supervisor: Any = Multiprocess
        if "target" in inspect.signature(Multiprocess).parameters:
            supervisor(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        else:
            supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        if o.uds and os.path.exists(o.uds):
            os.remove(o.uds)


def _run_hypercorn(factory: str, o: ServerOptions) -> None:
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    # The "asgi:" mode stops hypercorn from guessing; the call makes it use the factory.
    config.application_path = f"asgi:{factory}()"
    host = f"[{o.host}]" if ":" in o.host else o.host
    config.bind = [f"unix:{o.uds}"] if o.uds else [f"{host}:{o.port}"]
    config.root_path = o.root_path
    config.loglevel = o.log_level.upper()
    config.accesslog = "-" if o.access_log else None
    config.errorlog = "-"
    if o.timeout_keep_alive is not None:
        config.keep_alive_timeout = o.timeout_keep_alive
    if o.graceful_timeout is not None:
        config.graceful_timeout = o.graceful_timeout
    config.max_requests = o.max_requests
    config.use_reloader = o.reload
    # hypercorn's workers=0 serves in this process; its supervisor (workers >= 1) handles
    # SIGHUP and replaces workers that retire after --max-requests.
    single = o.workers == 1 and not o.reload and o.max_requests is None
    config.workers = 0 if single else o.workers
    code = run(config)
    if code:
        raise SystemExit(code)


def _run_granian(factory: str, o: ServerOptions) -> None:
    from pathlib import Path

    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    kill_timeout = None if o.graceful_timeout is None else max(1, int(o.graceful_timeout))
    Granian(
        factory,
        factory=True,
        interface=Interfaces.ASGI,
        address=o.host,
        port=o.port,
        uds=Path(o.uds) if o.uds else None,
        workers=o.workers,
        url_path_prefix=o.root_path or None,
        backpressure=o.limit_concurrency,
        workers_kill_timeout=kill_timeout,
        log_level=LogLevels(o.log_level),
        log_access=o.access_log,
        reload=o.reload,
        working_dir=Path.cwd(),
    ).serve()


def _run_daphne(factory: str, o: ServerOptions) -> None:
    module, _, attr = factory.partition(":")
    app = getattr(importlib.import_module(module), attr)()
    # Importing daphne.server installs the Twisted asyncio reactor, so it comes after the
    # app is loaded and only when daphne was chosen.
    from daphne.access import AccessLogGenerator  # type: ignore[import-untyped]
    from daphne.endpoints import (  # type: ignore[import-untyped]
        build_endpoint_description_strings,
    )
    from daphne.server import Server as Daphne  # type: ignore[import-untyped]

    logging.basicConfig(
        level=o.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    endpoints = build_endpoint_description_strings(
        host=None if o.uds else o.host, port=None if o.uds else o.port, unix_socket=o.uds
    )
    Daphne(
        application=app,
        endpoints=endpoints,
        root_path=o.root_path,
        action_logger=AccessLogGenerator(sys.stdout) if o.access_log else None,
        verbosity=1,
    ).run()


_COMMON = frozenset({"uds", "workers", "reload", "graceful_timeout"})

SERVERS: dict[str, Server] = {
    "uvicorn": Server(
        "uvicorn",
        "uvicorn",
        _COMMON | {"timeout_keep_alive", "limit_concurrency", "max_requests"},
        native_proxy_headers=True,
        sighup=True,
        run=_run_uvicorn,
    ),
    "hypercorn": Server(
        "hypercorn",
        "hypercorn",
        _COMMON | {"timeout_keep_alive", "max_requests"},
        native_proxy_headers=False,
        sighup=True,
        run=_run_hypercorn,
    ),
    "granian": Server(
        "granian",
        "granian",
        _COMMON | {"limit_concurrency"},
        native_proxy_headers=False,
        sighup=True,
        run=_run_granian,
    ),
    "daphne": Server(
        "daphne",
        "daphne",
        frozenset({"uds"}),
        native_proxy_headers=False,
        sighup=False,
        run=_run_daphne,
    ),
}
