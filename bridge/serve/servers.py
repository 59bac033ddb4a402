"""One small adapter per ASGI server: how uvicorn, hypercorn, granian and daphne run an app.

Each adapter receives a factory import string (``module:function``) that builds the ASGI
app, because every multi-process manager here starts fresh interpreters that must import
the app themselves; in a single process the factory hands back the app already loaded.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..observe.hygiene import RESET_CONTEXTVARS

# Option names a server may lack; ``check_supported`` refuses one that was asked for.
OPTIONAL = (
    "uds",
    "workers",
    "reload",
    "timeout",
    "timeout_keep_alive",
    "graceful_timeout",
    "limit_concurrency",
    "max_requests",
    "max_requests_jitter",
    "backlog",
    "http",
    "config",
)
# Seconds SIGTERM lets requests finish before they are cancelled: gunicorn's
# --graceful-timeout default, which the README and SECURITY.md promise.
GRACEFUL_TIMEOUT = 30
# How a refusal names an option on the command line, where that differs from its name.
FLAG_NAMES = {"timeout_keep_alive": "--keep-alive", "config": "-c/--config"}


@dataclass(frozen=True)
class ServerOptions:
    """What ``bridge serve`` asks of a server; ``None`` means the server's own default."""

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    # Every address to listen on, "HOST:PORT" or "unix:PATH"; empty means host and port
    # (or uds). The first is the one host, port and uds describe.
    binds: tuple[str, ...] = field(default_factory=tuple)
    workers: int = 1
    root_path: str = ""
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    timeout_keep_alive: float | None = None
    graceful_timeout: float | None = None
    limit_concurrency: int | None = None
    max_requests: int | None = None
    max_requests_jitter: int | None = None
    # gunicorn's --timeout: seconds before a silent worker is restarted.
    timeout: float | None = None
    backlog: int | None = None
    http: str = "auto"
    # A gunicorn.conf.py that gunicorn itself reads (--server gunicorn only).
    config: str | None = None
    log_level: str = "info"
    access_log: bool = True
    # gunicorn's --access-logformat (--server gunicorn only; bridge writes it elsewhere).
    access_log_format: str | None = None
    reload: bool = False

    def addresses(self) -> tuple[str, ...]:
        """Every address to listen on, as ``HOST:PORT`` or ``unix:PATH``."""
        if self.binds:
            return self.binds
        if self.uds:
            return (f"unix:{self.uds}",)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{host}:{self.port}",)


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
    # Runs the factory on sockets bridge has already bound, one per address.
    run: Callable[[str, ServerOptions, list[socket.socket]], None]
    # Whether the server can take sockets bound beforehand; otherwise bridge checks the
    # address is free, closes its socket, and the server binds the one address itself.
    takes_sockets: bool = True
    # What to pip install when ``package`` is missing.
    install: str = ""

    def check_installed(self) -> None:
        if importlib.util.find_spec(self.package) is None:
            raise ServerError(
                f"--server {self.name} needs the {self.package} package: "
                f"pip install {self.install or self.package}"
            )

    def check_supported(self, options: ServerOptions) -> None:
        defaults = ServerOptions()
        for name in OPTIONAL:
            asked = getattr(options, name)
            if name not in self.supports and asked not in (getattr(defaults, name), None):
                flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
                others = ", ".join(s.name for s in SERVERS.values() if name in s.supports)
                raise ServerError(
                    f"{self.name} does not support {flag}; drop it or choose --server {others}."
                )
        if len(options.addresses()) > 1 and not self.takes_sockets:
            raise ServerError(
                f"{self.name} listens on one address, and --bind was given "
                f"{len(options.addresses())}; keep one, or choose --server uvicorn, "
                "hypercorn or gunicorn."
            )


def bind_sockets(options: ServerOptions) -> list[socket.socket]:
    """Bind every address now, so a mistake is one sentence before anything starts."""
    sockets: list[socket.socket] = []
    try:
        for address in options.addresses():
            sockets.append(_bind(address, options.backlog or 2048))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(address: str, backlog: int) -> socket.socket:
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            if not _is_socket(path):
                sock.close()
                raise ServerError(
                    f'"{path}" exists and is not a socket; remove it or bind another path.'
                )
            os.remove(path)  # a socket left behind by a previous run, as gunicorn does
        target: Any = path
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target = (host, int(port))
    try:
        sock.bind(target)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServerError(
                f'The address "{address}" is already in use; stop what listens there, '
                "or choose another --port or --bind."
            ) from None
        raise ServerError(
            f'Cannot listen on "{address}": {exc.strerror}; choose another --bind.'
        ) from None
    sock.set_inheritable(True)
    return sock


def _is_socket(path: str) -> bool:
    import stat

    return stat.S_ISSOCK(os.stat(path).st_mode)


def _run_uvicorn(factory: str, o: ServerOptions, sockets: list[socket.socket]) -> None:
    import uvicorn
    from uvicorn.supervisors import ChangeReload, Multiprocess

    kwargs: dict[str, Any] = {
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
        # uvicorn's default waits for connections without a bound; gunicorn's does not.
        "timeout_graceful_shutdown": (
            GRACEFUL_TIMEOUT if o.graceful_timeout is None else int(o.graceful_timeout)
        ),
        "limit_concurrency": o.limit_concurrency,
        "limit_max_requests": o.max_requests,
        "log_level": o.log_level,
        "access_log": o.access_log,
        "http": o.http,
    }
    if o.backlog is not None:
        kwargs["backlog"] = o.backlog
    parameters = inspect.signature(uvicorn.Config).parameters
    if o.max_requests_jitter:
        if "limit_max_requests_jitter" not in parameters:
            raise ServerError(
                "--max-requests-jitter needs uvicorn 0.36 or later: pip install -U uvicorn."
            )
        kwargs["limit_max_requests_jitter"] = o.max_requests_jitter
    if "reset_contextvars" in parameters:  # bridge.observe.hygiene says why
        kwargs["reset_contextvars"] = RESET_CONTEXTVARS
    if o.timeout is not None and "timeout_worker_healthcheck" in parameters:
        kwargs["timeout_worker_healthcheck"] = max(1, int(o.timeout))
    from .draining import PROTOCOLS
    from .logs import uvicorn_log_config

    # uvicorn's own protocols, but a worker that retires answers what it accepted.
    kwargs["http"] = PROTOCOLS[o.http]
    kwargs["log_config"] = uvicorn_log_config(o.log_level)
    config = uvicorn.Config(factory, **kwargs)
    server = uvicorn.Server(config)
    try:
        if o.reload:
            ChangeReload(config, target=server.run, sockets=sockets).run()
        elif o.workers > 1 or o.max_requests is not None:
            # One worker with --max-requests still gets uvicorn's supervisor, so a worker
            # that retires after its quota is replaced, as gunicorn does, instead of
            # ending the server.
            supervisor: Any = Multiprocess
            if "target" in inspect.signature(Multiprocess).parameters:
                supervisor(config, target=server.run, sockets=sockets).run()
            else:
                supervisor(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # as uvicorn.run: SIGINT ends the server, not the process with a traceback
    finally:
        _close(sockets, o)


def _close(sockets: list[socket.socket], o: ServerOptions) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):  # a server may have closed it already
            sock.close()
    for address in o.addresses():
        if address.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(address[len("unix:") :])


def _run_hypercorn(factory: str, o: ServerOptions, sockets: list[socket.socket]) -> None:
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    # The "asgi:" mode stops hypercorn from guessing; the call makes it use the factory.
    config.application_path = f"asgi:{factory}()"
    # hypercorn closes the sockets it was given; it gets its own copies.
    config.bind = [f"fd://{os.dup(sock.fileno())}" for sock in sockets]
    if o.backlog is not None:
        config.backlog = o.backlog
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
    try:
        code = run(config)
    finally:
        _close(sockets, o)
    if code:
        raise SystemExit(code)


def _run_granian(factory: str, o: ServerOptions, sockets: list[socket.socket]) -> None:
    from pathlib import Path

    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    kill_timeout = (
        GRACEFUL_TIMEOUT if o.graceful_timeout is None else max(1, int(o.graceful_timeout))
    )
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


def _run_daphne(factory: str, o: ServerOptions, sockets: list[socket.socket]) -> None:
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


def _run_gunicorn(factory: str, o: ServerOptions, sockets: list[socket.socket]) -> None:
    try:
        # gunicorn closes the sockets it was given; it gets its own copies.
        run_arbiter(factory, o, [os.dup(sock.fileno()) for sock in sockets])
    finally:
        _close(sockets, o)


_COMMON = frozenset({"uds", "workers", "reload", "graceful_timeout"})

SERVERS: dict[str, Server] = {
    "uvicorn": Server(
        "uvicorn",
        "uvicorn",
        _COMMON
        | {
            "timeout",
            "timeout_keep_alive",
            "limit_concurrency",
            "max_requests",
            "max_requests_jitter",
            "backlog",
            "http",
        },
        native_proxy_headers=True,
        sighup=True,
        run=_run_uvicorn,
    ),
    "gunicorn": Server(
        "gunicorn",
        "uvicorn_worker",
        _COMMON | frozenset(OPTIONAL),
        native_proxy_headers=True,
        sighup=True,
        run=_run_gunicorn,
        install="'bridge[gunicorn]'",
    ),
    "hypercorn": Server(
        "hypercorn",
        "hypercorn",
        _COMMON | {"timeout_keep_alive", "max_requests", "backlog"},
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
        takes_sockets=False,
    ),
    "daphne": Server(
        "daphne",
        "daphne",
        frozenset({"uds"}),
        native_proxy_headers=False,
        sighup=False,
        run=_run_daphne,
        takes_sockets=False,
    ),
}


def run_arbiter(factory: str, o: ServerOptions, fds: list[int]) -> None:
    """Run gunicorn's arbiter over the sockets ``fds`` with ``factory`` as the app.

    ``bridge serve --server gunicorn``: a ``-c`` file is read first, as gunicorn reads
    it (hooks included), then the options bridge serve was given win over it.
    """
    from gunicorn.app.base import Application  # type: ignore[import-untyped]

    from .worker import Worker

    settings: dict[str, Any] = {
        "bind": [f"fd://{fd}" for fd in fds],
        "workers": o.workers,
        "worker_class": "bridge.gunicorn.H11Worker"
        if o.http == "h11"
        else "bridge.gunicorn.Worker",
        "keepalive": 5 if o.timeout_keep_alive is None else int(o.timeout_keep_alive),
        "forwarded_allow_ips": o.forwarded_allow_ips if o.proxy_headers else "",
        "loglevel": o.log_level,
        "accesslog": "-" if o.access_log else None,
        "reload": o.reload,
        "root_path": o.root_path,
    }
    # gunicorn's settings take whole seconds.
    optional = {
        "timeout": None if o.timeout is None else int(o.timeout),
        "graceful_timeout": None if o.graceful_timeout is None else int(o.graceful_timeout),
        "max_requests": o.max_requests,
        "max_requests_jitter": o.max_requests_jitter,
        "worker_connections": o.limit_concurrency,
        "backlog": o.backlog,
        "access_log_format": o.access_log_format,
    }
    settings.update({name: value for name, value in optional.items() if value is not None})
    module, _, attribute = factory.partition(":")
    Worker.built_by_bridge = True

    class Arbitered(Application):  # type: ignore[misc]
        def init(self, parser: Any, opts: Any, args: Any) -> None:
            """Unused: load_config below replaces gunicorn's command-line parsing."""

        def load_config(self) -> None:
            if o.config:
                self.load_config_from_file(o.config)
            for name, value in settings.items():
                if name in self.cfg.settings:
                    self.cfg.set(name, value)

        def load(self) -> object:
            # In each worker, after the fork: a fresh app from the recipe bridge serve left.
            return getattr(__import__(module, fromlist=[attribute]), attribute)(fresh=True)

    Arbitered().run()
