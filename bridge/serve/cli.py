"""``bridge serve``, ``bridge check`` and ``bridge replay``: a thin command line over the
keyword-only ``run()`` (and ``bridge.serve.replay``).

The options keep the names gunicorn and uvicorn users know, and read the environment
variables hosting platforms set: ``PORT``, ``WEB_CONCURRENCY``, ``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from .. import __version__
from .._types import ASGIApp
from ..app import Bridge
from ..broadcast.hub import BROADCAST_VARIABLE, Broadcast
from ..metrics.whole_server import DIRECTORY_VARIABLE as METRICS_VARIABLE
from ..observe.hygiene import FreshContext
from ..options import check_options
from ..threads.pool import DEFAULT_MAX_THREADS
from ..wsgi.multiprocess import VARIABLE as MULTIPROCESS_VARIABLE
from . import importer, replay
from .gunicorn_flags import read_config, refused_flag
from .gunicorn_limits import GunicornLimits
from .importer import (
    AppImportError,
    ImportFromStringError,
    Loaded,
    classify,
    wrap_app,
)
from .importer import import_from_string as _import
from .servers import SERVERS, ServerError, ServerOptions, bind_sockets

# The app string and the options that shape the app travel to worker processes in this
# variable: each worker is a fresh interpreter that rebuilds the app from it.
RECIPE_VARIABLE = "BRIDGE_SERVE_RECIPE"
FACTORY = "bridge.serve.cli:_worker_app"

# A user mistake exits 2, as argparse does for a bad option.
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or the environment; the message names the fix."""


@dataclass(frozen=True)
class Recipe:
    """Everything needed to rebuild the served app in another process."""

    app: str
    threads: int | None = None
    mounts: list[tuple[str, str]] = field(default_factory=list)
    app_dir: str = "."
    # Trusted proxy addresses, when bridge must apply X-Forwarded-* itself.
    proxy_trusted: str | None = None
    # gunicorn's --limit-request-line, --limit-request-fields, --limit-request-field_size;
    # None leaves bridge's own defaults (no line or field size limit, 100 fields).
    limit_request_line: int | None = None
    limit_request_fields: int | None = None
    limit_request_field_size: int | None = None
    # The live events' Broadcast URL, set as $BRIDGE_BROADCAST_URL before the app loads.
    broadcast: str | None = None
    # Bridge options from the budget flags (BUDGET_FLAGS), for the Bridge bridge builds.
    budgets: dict[str, float | int | None] = field(default_factory=dict)
    # Each request from an empty context, for a server that cannot (bridge.observe.hygiene).
    fresh_context: bool = False
    # gunicorn's --access-logformat: each response logged in it by gunicorn's own logger,
    # in place of the server's access log ("": gunicorn's default; None: the server's own).
    access_log_format: str | None = None


@dataclass(frozen=True)
class Built:
    """The app to hand to the server, and what it was made from."""

    loaded: Loaded
    app: ASGIApp
    mounts: list[tuple[str, str]]


_preloaded: ASGIApp | None = None


def _worker_app(fresh: bool = False) -> ASGIApp:
    """The factory every server imports: the app loaded here, or rebuilt from the recipe.

    ``fresh`` rebuilds it even where it was loaded: gunicorn's forked workers must not
    share the objects (thread pools, locks) of the process they were forked from.
    """
    if _preloaded is not None and not fresh:
        return _preloaded
    raw = os.environ.get(RECIPE_VARIABLE)
    if raw is None:
        raise RuntimeError(f"{FACTORY} is run by bridge serve, which sets {RECIPE_VARIABLE}.")
    data = json.loads(raw)
    data["mounts"] = [tuple(pair) for pair in data["mounts"]]
    return build(Recipe(**data)).app


def build(recipe: Recipe, obj: object = None) -> Built:
    """Import the app (or take ``obj``), wrap a WSGI callable in ``Bridge``, attach the mounts."""
    app_dir = os.path.abspath(recipe.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    if recipe.broadcast:
        os.environ[BROADCAST_VARIABLE] = recipe.broadcast
    options: dict[str, Any] = dict(recipe.budgets)
    if recipe.limit_request_fields is not None:
        options["max_header_count"] = recipe.limit_request_fields
    if obj is None:
        obj = _import(recipe.app)
    loaded = wrap_app(obj, recipe.app, threads=recipe.threads, options=options)
    if recipe.threads is not None and loaded.kind != "wsgi":
        raise UsageError(_threads_unused(recipe.threads, loaded))
    if recipe.budgets and loaded.kind != "wsgi":
        raise UsageError(_budgets_unused(recipe.budgets, loaded))
    app: ASGIApp = loaded.app
    given = getattr(getattr(loaded.bridge, "broadcast", None), "url", recipe.broadcast)
    if recipe.broadcast and given != recipe.broadcast:
        print(
            f'bridge: warning: --broadcast "{recipe.broadcast}" is not used: the app passes '
            f'its own Bridge(broadcast="{given}"); drop one of them.',
            file=sys.stderr,
        )
    if recipe.mounts:
        if loaded.bridge is None:
            raise UsageError(
                f'--mount needs a WSGI application or a Bridge to mount beside, and "{recipe.app}" '
                "is an ASGI application; mount inside that application instead."
            )
        mount = getattr(loaded.bridge, "mount", None)
        if mount is None:
            raise UsageError("--mount needs Bridge.mount(), which this version of bridge lacks.")
        for prefix, text in recipe.mounts:
            mount(prefix, _mountable(text, recipe.threads))
    if recipe.proxy_trusted is not None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app = ProxyHeadersMiddleware(app, trusted_hosts=recipe.proxy_trusted)  # type: ignore[arg-type,assignment]
    if recipe.access_log_format is not None:
        app = gunicorn_access_log(app, recipe.access_log_format)
    if recipe.limit_request_line or recipe.limit_request_field_size or recipe.limit_request_fields:
        # The field count is the Bridge's own max_header_count where there is a Bridge.
        app = GunicornLimits(
            app,
            line=recipe.limit_request_line or 0,
            fields=0 if loaded.kind == "wsgi" else recipe.limit_request_fields or 0,
            field_size=recipe.limit_request_field_size or 0,
        )
    if recipe.fresh_context:
        app = FreshContext(app)
    return Built(loaded, app, recipe.mounts)


def gunicorn_access_log(app: ASGIApp, access_log_format: str) -> ASGIApp:
    """``app`` with one access line per response, as gunicorn writes it (to stdout)."""
    try:
        from gunicorn.config import Config  # type: ignore[import-untyped]
        from gunicorn.glogging import Logger  # type: ignore[import-untyped]

        from .worker import AccessLog
    except ImportError:
        raise UsageError(
            "gunicorn's access-log format is written by gunicorn's logger: "
            "pip install 'bridge[gunicorn]', or drop --access-logformat and accesslog."
        ) from None
    config = Config()
    config.set("accesslog", "-")
    if access_log_format:  # empty: gunicorn's default format
        config.set("access_log_format", access_log_format)
    return AccessLog(app, Logger(config))


def _threads_unused(threads: int, loaded: Loaded) -> str:
    if loaded.bridge is not None:
        return (
            f'--threads {threads} does not reach "{loaded.text}", which builds its own Bridge '
            f"(max_threads={loaded.bridge.max_threads}): set max_threads there, or drop --threads."
        )
    return (
        f'--threads {threads} does not reach "{loaded.text}", an ASGI application with no '
        "legacy thread pool; drop --threads."
    )


# bridge serve's flags for the budgets of the Bridge it builds around a WSGI app: the
# Bridge option each sets ("none" turns an optional one off), its kind and its help.
BUDGET_FLAGS: dict[str, tuple[str, type[int] | type[float], str, str]] = {
    "--max-body-size": (
        "max_body_size", int, "BYTES", "largest request body (1 GiB; none for no limit); 413"
    ),
    "--body-timeout": (
        "body_timeout", float, "SECONDS",
        "longest wait for the next piece of a request body (60; none to wait forever); 408",
    ),
    "--body-deadline": (
        "body_deadline", float, "SECONDS",
        "longest time to receive a whole request body (300; none for no deadline); 408",
    ),
    "--max-uploads": ("max_uploads", int, "N", "request bodies arriving at once (1000); 503"),
    "--max-pending": ("max_pending", int, "N", "requests waiting for a legacy thread (2048); 503"),
}  # fmt: skip


def _budget(kind: Callable[[str], float | int]) -> Callable[[str], float | int | None]:
    """The argparse type of a budget flag: a number of ``kind``, or "none"."""

    def parse(text: str) -> float | int | None:
        if text.lower() == "none":
            return None
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def _flag_of(option: str) -> str:
    return next(flag for flag, (name, *_) in BUDGET_FLAGS.items() if name == option)


def _budgets_unused(budgets: dict[str, float | int | None], loaded: Loaded) -> str:
    flags = ", ".join(_flag_of(option) for option in budgets)
    if loaded.bridge is not None:
        settings = ", ".join(f"{option}=..." for option in budgets)
        return (
            f'{flags} does not reach "{loaded.text}", which builds its own Bridge: set '
            f"{settings} there, or drop {flags}."
        )
    return (
        f'{flags} does not reach "{loaded.text}", an ASGI application with no legacy '
        f"request path; drop {flags}."
    )


def _mountable(text: str, threads: int | None) -> ASGIApp:
    obj = _import(text)
    if classify(obj, text) == "wsgi":
        return Bridge(obj, max_threads=threads or DEFAULT_MAX_THREADS)  # type: ignore[arg-type]
    return obj  # type: ignore[return-value]


def parse_mount(text: str) -> tuple[str, str]:
    """Split ``PREFIX=MODULE:ATTR``."""
    prefix, sep, app = text.partition("=")
    if not sep or not prefix.startswith("/") or not app:
        raise UsageError(
            f'--mount "{text}" must be in format "PREFIX=MODULE:ATTR", for example "/v2=myapi:app".'
        )
    return prefix, app


def run(
    app: str | object,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    binds: Sequence[str] = (),
    workers: int = 1,
    threads: int | None = None,
    root_path: str = "",
    proxy_headers: bool = True,
    forwarded_allow_ips: str = "127.0.0.1",
    timeout: float | None = None,
    timeout_keep_alive: float | None = None,
    graceful_timeout: float | None = None,
    limit_concurrency: int | None = None,
    max_requests: int | None = None,
    max_requests_jitter: int | None = None,
    backlog: int | None = None,
    limit_request_line: int | None = None,
    limit_request_fields: int | None = None,
    limit_request_field_size: int | None = None,
    http: str = "auto",
    config: str | None = None,
    log_level: str = "info",
    access_log: bool = True,
    reload: bool = False,
    mounts: Sequence[tuple[str, str]] = (),
    server: str = "uvicorn",
    app_dir: str = ".",
    broadcast: str | None = None,
    access_log_format: str | None = None,
    budgets: Mapping[str, float | int | None] | None = None,
) -> None:
    """Serve ``app``, an app string or the application itself, until a signal stops it.

    SIGTERM lets in-flight requests finish within ``graceful_timeout`` seconds; SIGINT stops.
    ``binds`` are gunicorn's ``-b`` addresses (``HOST:PORT``, ``unix:PATH``), in place of
    ``host``/``port``/``uds``. The startup line is printed once every address is bound.
    """
    global _preloaded
    if workers < 1:
        raise UsageError(f"--workers {workers} must be 1 or more.")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads} must be 1 or more (threads for the legacy app).")
    for flag, value in (
        ("--timeout", timeout),
        ("--keep-alive", timeout_keep_alive),
        ("--graceful-timeout", graceful_timeout),
        ("--limit-concurrency", limit_concurrency),
        ("--max-requests", max_requests),
        ("--max-requests-jitter", max_requests_jitter),
        ("--backlog", backlog),
        ("--limit-request-line", limit_request_line),
        ("--limit-request-fields", limit_request_fields),
        ("--limit-request-field_size", limit_request_field_size),
    ):
        if value is not None and value < 0:
            raise UsageError(f"{flag} {value:g} must be 0 or more.")
    for option, budget in (budgets or {}).items():
        # Bridge's own rule for the option, before the app is imported: its sentence,
        # led by the flag that set it.
        try:
            check_options(**{option: budget})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{_flag_of(option)}: {exc}") from None
    if reload and workers > 1:
        raise UsageError("--reload runs one process for development; drop --workers or --reload.")
    adapter = SERVERS[server]
    # gunicorn writes its own format; on the other servers bridge writes it, in place
    # of the server's access log.
    ours = access_log_format if server != "gunicorn" and access_log else None
    options = ServerOptions(
        host=host,
        port=port,
        uds=uds,
        binds=tuple(binds),
        workers=workers,
        root_path=root_path.rstrip("/"),
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout=timeout,
        timeout_keep_alive=timeout_keep_alive,
        graceful_timeout=graceful_timeout,
        limit_concurrency=limit_concurrency,
        max_requests=max_requests,
        max_requests_jitter=max_requests_jitter,
        backlog=backlog,
        http=http,
        config=config,
        log_level=log_level,
        access_log=access_log and ours is None,
        access_log_format=(access_log_format or None) if server == "gunicorn" else None,
        reload=reload,
    )
    adapter.check_installed()
    adapter.check_supported(options)
    proxy = None if adapter.native_proxy_headers or not proxy_headers else forwarded_allow_ips
    obj = None
    if not isinstance(app, str):
        if workers > 1 or reload or max_requests is not None or server in ("granian", "gunicorn"):
            raise UsageError(
                "--workers, --reload, --max-requests, granian and gunicorn start processes that "
                "import the application: pass it as an import string such as "
                '"myproject.wsgi:application".'
            )
        obj, app = app, _name_of(app)
    # PEP 3333: wsgi.multiprocess is true when "an equivalent application object may be
    # simultaneously invoked by another process"; every worker inherits this variable.
    os.environ[MULTIPROCESS_VARIABLE] = "1" if workers > 1 else "0"
    if broadcast:
        try:
            Broadcast(broadcast)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--broadcast: {exc}") from None
    recipe = Recipe(
        app,
        threads,
        list(mounts),
        app_dir,
        proxy,
        limit_request_line=limit_request_line,
        limit_request_fields=limit_request_fields,
        limit_request_field_size=limit_request_field_size,
        broadcast=broadcast or None,
        budgets=dict(budgets or {}),
        fresh_context=server == "daphne",
        access_log_format=ours,
    )
    # Several workers count into one directory, so /_bridge/metrics and the dashboard
    # show the whole server whichever worker answers (bridge/metrics/whole_server.py).
    # Set before this process builds the app: gunicorn's forked workers keep the app
    # module this process imported, and its Bridge must count into the directory (this
    # process only supervises; it publishes nothing there).
    # gunicorn forks its workers inside adapter.run(), and a worker that exits unwinds
    # through this same frame: only the process that made the directory removes it, or
    # the first recycled worker would delete it under the live ones.
    shared = None
    owner = os.getpid()
    try:
        if (workers > 1 or max_requests is not None) and not os.environ.get(METRICS_VARIABLE):
            shared = os.environ[METRICS_VARIABLE] = tempfile.mkdtemp(prefix="bridge-metrics-")
        built = build(recipe, obj)
        os.environ[RECIPE_VARIABLE] = json.dumps(asdict(recipe))
        _preloaded = built.app
        sockets = bind_sockets(options)
        if not adapter.takes_sockets:
            # granian and daphne bind for themselves: the address was free a moment ago.
            for sock in sockets:
                sock.close()
            sockets = []
        if timeout is not None and server == "uvicorn" and workers == 1 and max_requests is None:
            print(
                f"bridge: note: --timeout {timeout:g} is gunicorn's worker timeout; a single "
                "uvicorn process has no supervisor to restart it, so it has no effect here "
                "(use --workers 2 or more, or --server gunicorn).",
                file=sys.stderr,
            )
        print(startup_line(built, adapter.name, options), file=sys.stderr, flush=True)
        warning = broadcast_warning(built, workers)
        if warning:
            print(f"bridge: warning: {warning}", file=sys.stderr, flush=True)
        adapter.run(FACTORY, options, sockets)
    finally:
        if shared is not None and os.getpid() == owner:
            os.environ.pop(METRICS_VARIABLE, None)
            shutil.rmtree(shared, ignore_errors=True)


def broadcast_warning(built: Built, workers: int) -> str | None:
    """What to say when several workers would each keep live events to themselves."""
    bridge = built.loaded.bridge
    broadcast = getattr(bridge, "broadcast", None)
    if workers < 2 or broadcast is None or not broadcast.url.startswith("memory:"):
        return None
    # Websocket routes, and routes whose view subscribes to the broadcast (an SSE feed).
    live = [f"websocket {route.rule}" for route in getattr(bridge, "websocket_routes", ())]
    live += [
        f"SSE {route.rule}"
        for route in getattr(bridge, "routes", ())
        if _names(getattr(route, "view", None), "subscribe")
    ]
    if not live:
        return None  # probably no live feature at all
    return (
        f"live events on {broadcast.url} reach only the clients of the worker that "
        f"publishes them ({', '.join(live)}), and there are {workers} workers; give "
        '--broadcast redis://HOST:6379/0 (docs/deployment.md, "Live features on many workers").'
    )


def _names(function: object, name: str) -> bool:
    """Whether ``function``'s code, or code nested in it (a generator), uses ``name``."""
    code = getattr(function, "__code__", None)
    stack = [code] if code is not None else []
    while stack:
        code = stack.pop()
        if name in code.co_names:
            return True
        stack.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return False


def _name_of(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{getattr(obj, '__module__', None) or type(obj).__module__}:{name}"


def startup_line(built: Built, server: str, o: ServerOptions) -> str:
    """The one line that says what is served, where, and how."""
    loaded = built.loaded
    if loaded.kind == "wsgi":
        what = f"WSGI via bridge, {_threads(loaded)} threads"
    elif loaded.kind == "bridge":
        what = f"Bridge, {_threads(loaded)} threads"
    elif loaded.bridge is not None:
        what = f"ASGI middleware around a Bridge, {_threads(loaded)} threads"
    else:
        what = "ASGI"
    where = ", ".join(
        address if address.startswith("unix:") else f"http://{address}{o.root_path}"
        for address in o.addresses()
    )
    routes = getattr(loaded.bridge, "routes", None) or []
    # A shadow route is not migrated: the legacy app still answers it.
    shadowed = sum(getattr(r, "shadow", None) is not None for r in routes)
    line = (
        f"bridge: serving {loaded.text} ({what}) with {server} on {where}, "
        f"{_plural(o.workers, 'worker')}, {_plural(len(routes) - shadowed, 'route')} migrated"
    )
    if shadowed:
        line += f", {shadowed} shadowed (answered by the legacy app)"
    if built.mounts:
        line += ", mounted " + ", ".join(f"{p}={t}" for p, t in built.mounts)
    return line + canary_note(loaded.bridge, o.workers)


def canary_note(bridge: object, workers: int) -> str:
    """The canary routes, and whether a change made in one worker reaches the others."""
    controls = getattr(getattr(bridge, "canaries", None), "controls", None)
    if not controls:
        return ""
    note = f", {_plural(len(controls), 'canary route')}"
    url = getattr(getattr(bridge, "broadcast", None), "url", "")
    if workers > 1 and url.startswith("memory:"):
        note += (
            f" whose changes (set, rollback, promote) reach only the worker that makes them "
            f"on {url}: give --broadcast redis://HOST:6379/0 to reach all {workers}"
        )
    return note


def check_report(built: Built) -> str:
    """What ``bridge serve`` would serve, one fact a line."""
    loaded = built.loaded
    kinds = {"wsgi": "WSGI application", "bridge": "Bridge", "asgi": "ASGI application"}
    lines = [f"app: {loaded.text} ({kinds[loaded.kind]})"]
    bridge = loaded.bridge
    if bridge is not None:
        legacy = bridge.wsgi_app
        name = getattr(legacy, "__qualname__", type(legacy).__qualname__)
        lines.append(f"legacy app: {getattr(legacy, '__module__', '?')}.{name}")
        lines.append(f"threads: {bridge.max_threads}")
        for label, attribute, describe in (
            ("async routes", "routes", _describe_route),
            ("websocket routes", "websocket_routes", _describe_websocket),
            ("mounts", "mounts", _describe_mount),
        ):
            items = getattr(bridge, attribute, None)
            if items is not None:
                lines.append(f"{label}: {len(items)}")
                lines.extend(f"  {describe(item)}" for item in items)
    return "\n".join(lines)


def _describe_route(route: object) -> str:
    methods = getattr(route, "methods", None)
    verbs = ",".join(sorted(methods)) if methods else "ANY"
    kind = "async" if getattr(route, "is_async", False) else "sync"
    if getattr(route, "shadow", None) is not None:
        kind += " view in the shadow; the legacy app answers"
    return f"{verbs} {getattr(route, 'rule', route)} -> {_endpoint(route)} ({kind})"


def _describe_websocket(route: object) -> str:
    return f"{getattr(route, 'rule', route)} -> {_endpoint(route)}"


def _describe_mount(mount: object) -> str:
    app = getattr(mount, "app", None)
    return f"{getattr(mount, 'prefix', mount)} -> {_name_of(app) if app else '?'}"


def _endpoint(route: object) -> str:
    view = getattr(route, "view", None)
    return _name_of(view) if view is not None else str(getattr(route, "endpoint", "?"))


def _threads(loaded: Loaded) -> int:
    return loaded.bridge.max_threads if loaded.bridge is not None else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def load_env_file(path: str) -> None:
    """Set ``KEY=VALUE`` lines from ``path`` into the environment; variables already set win."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        raise UsageError(
            f'Env file "{path}" could not be read; check the --env-file path.'
        ) from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f'Line {number} of env file "{path}" must be in format "KEY=VALUE".')
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        os.environ.setdefault(key, value)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(
            f'The environment variable {name}="{raw}" must be an integer, such as {default}.'
        ) from None


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: argparse would otherwise take gunicorn's --timeout
    # as a prefix of --timeout-keep-alive.
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="Serve a WSGI or ASGI application on an ASGI server.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,check,replay}")
    serve = commands.add_parser(
        "serve", help="serve APP until SIGTERM or SIGINT", allow_abbrev=False
    )
    check = commands.add_parser(
        "check", help="import APP and say what would be served", allow_abbrev=False
    )
    replaying = commands.add_parser(
        "replay",
        help="answer a downloaded shadow mismatch with the legacy app and the view, and compare",
        allow_abbrev=False,
    )
    replaying.add_argument("file", metavar="FILE", help="a mismatch downloaded from the dashboard")
    replaying.add_argument("app", metavar="APP", help="the Bridge, such as app:application")
    replaying.add_argument("--app-dir", default=".", help="directory added to sys.path (default .)")
    for sub in (serve, check):
        sub.add_argument(
            "app",
            metavar="APP",
            nargs="?",
            help="module:attr, module:factory(), or module (or wsgi_app in -c FILE)",
        )
        sub.add_argument("--threads", type=int, help="legacy thread pool size (default 32)")
        sub.add_argument(
            "--mount",
            action="append",
            default=[],
            metavar="PREFIX=MODULE:ATTR",
            help="serve another ASGI app under PREFIX (repeatable)",
        )
        sub.add_argument("--app-dir", default=".", help="directory added to sys.path (default .)")
        sub.add_argument("--env-file", help="read KEY=VALUE lines into the environment first")
        sub.add_argument("-c", "--config", help="a gunicorn.conf.py to read settings from")
    add = serve.add_argument
    add("--server", choices=list(SERVERS), default=None, help="ASGI server (uvicorn)")
    add(
        "-b",
        "--bind",
        action="append",
        metavar="ADDRESS",
        help="HOST:PORT or unix:PATH, as gunicorn takes it (repeatable)",
    )
    add("--host", help="address to bind (127.0.0.1)")
    add("--port", type=int, help="port to bind (default $PORT or 8000)")
    add("--uds", help="bind a unix domain socket instead")
    add("--workers", "-w", type=int, help="processes (default $WEB_CONCURRENCY or 1)")
    add("--root-path", help="the prefix a proxy strips, seen as SCRIPT_NAME")
    add(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trust X-Forwarded-* from --forwarded-allow-ips (on)",
    )
    add("--forwarded-allow-ips", help="default $FORWARDED_ALLOW_IPS or 127.0.0.1; * for any")
    add("-t", "--timeout", type=float, help="gunicorn's worker timeout (see docs/deployment.md)")
    add(
        "--keep-alive",
        "--timeout-keep-alive",
        dest="timeout_keep_alive",
        type=float,
        help="close idle connections after seconds (5)",
    )
    add("--graceful-timeout", type=float, help="seconds SIGTERM waits for requests to finish")
    add(
        "--limit-concurrency",
        "--worker-connections",
        dest="limit_concurrency",
        type=int,
        help="connections at once before answering 503",
    )
    add("--max-requests", type=int, help="replace a worker after this many requests")
    add("--max-requests-jitter", type=int, help="add up to this many to --max-requests")
    add("--backlog", type=int, help="connections waiting to be accepted (2048)")
    add("--limit-request-line", type=int, help="longest request line; 414 past it")
    add("--limit-request-fields", type=int, help="most header fields (100); 431 past it")
    add("--limit-request-field_size", type=int, help="longest header field; 431 past it")
    for flag, (_, kind, metavar, text) in BUDGET_FLAGS.items():
        # Absent unless given, since None is a value here ("none": no limit).
        add(
            flag,
            type=_budget(kind),
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=f"{text} past it",
        )
    add("--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn's parser")
    add("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    add("--access-log", action=argparse.BooleanOptionalAction, default=True)
    add(
        "--access-logformat",
        metavar="FORMAT",
        help="write the access log in gunicorn's format (its atoms), needs gunicorn",
    )
    add("--access-logfile", dest="accesslog", metavar="-", help="- for gunicorn's access log")
    add("--reload", action="store_true", default=None, help="restart on code changes")
    add(
        "--broadcast",
        metavar="URL",
        help="live events: memory:// (one process) or redis://host:port/db for many "
        "workers and hosts (default $BRIDGE_BROADCAST_URL or memory://)",
    )
    return parser


# gunicorn.conf.py setting -> bridge serve's option name, for the settings bridge reads.
CONFIG_SETTINGS = {
    "wsgi_app": "app",
    "bind": "bind",
    "workers": "workers",
    "threads": "threads",
    "timeout": "timeout",
    "graceful_timeout": "graceful_timeout",
    "keepalive": "timeout_keep_alive",
    "max_requests": "max_requests",
    "max_requests_jitter": "max_requests_jitter",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "root_path": "root_path",
    "loglevel": "log_level",
    "reload": "reload",
    "backlog": "backlog",
    "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields",
    "limit_request_field_size": "limit_request_field_size",
    "worker_connections": "limit_concurrency",
    "accesslog": "accesslog",
    "access_log_format": "access_logformat",
}


def apply_config(args: argparse.Namespace) -> None:
    """Fill the options the command line left unset from ``-c FILE``, as gunicorn does.

    With ``--server gunicorn`` every setting is allowed (gunicorn reads the file too);
    on other servers a setting bridge cannot honour is refused.
    """
    if not args.config:
        return
    understood = set(CONFIG_SETTINGS)
    if args.command == "check" or args.server == "gunicorn":
        from .gunicorn_flags import ALL_FLAGS, HOOKS

        understood |= {flag.setting for flag in ALL_FLAGS} | HOOKS
    try:
        settings = read_config(args.config, understood)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for setting, value in settings.items():
        dest = CONFIG_SETTINGS.get(setting)
        if dest is not None and getattr(args, dest, None) in (None, []):
            if setting == "bind" and isinstance(value, str):
                value = [value]
            if setting == "loglevel":
                value = str(value).lower()
            setattr(args, dest, value)


def parse_bind(text: str) -> str:
    """Normalise one gunicorn ``-b`` address: HOST:PORT, [IPv6]:PORT, HOST or unix:PATH."""
    if text.startswith("unix:") and len(text) > len("unix:"):
        return text
    if text.startswith("fd://"):
        raise UsageError(
            f'--bind "{text}": bridge serve binds its own sockets; give HOST:PORT or unix:PATH.'
        )
    host, sep, port = text.rpartition(":")
    if not sep or (text.startswith("[") and not host.endswith("]")):
        host, port = text, "8000"  # gunicorn: a bare host listens on port 8000
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535 or "/" in host:
        raise UsageError(
            f'--bind "{text}" must be in format "HOST:PORT" or "unix:PATH", '
            'for example "0.0.0.0:8000".'
        )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _user_frames(exc: BaseException) -> TracebackType | None:
    """The traceback from the first frame of the user's code, past bridge and importlib."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith("<frozen") or filename in _SKIPPED_FILES):
            break
        tb = tb.tb_next
    return tb


_SKIPPED_FILES = {importer.__file__, importlib.__file__}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bridge`` command; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    refusal = refused_flag(words) if words[:1] == ["serve"] else None
    if refusal is not None:
        print(f"bridge: error: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(words)
    try:
        if args.command == "replay":
            return replay.command(args.file, args.app, args.app_dir)
        if args.env_file:
            load_env_file(args.env_file)
        apply_config(args)
        if args.app is None:
            raise UsageError(
                'Name the application to serve, such as "myproject.wsgi:application" '
                "(or set wsgi_app in the -c file)."
            )
        mounts = [parse_mount(text) for text in args.mount]
        if args.command == "check":
            if args.threads is not None and args.threads < 1:
                raise UsageError(f"--threads {args.threads} must be 1 or more.")
            recipe = Recipe(args.app, args.threads, mounts, args.app_dir)
            print(check_report(build(recipe)))
            return 0
        serve(args, mounts)
    except (UsageError, ImportFromStringError, ServerError, replay.ReplayError) as exc:
        print(f"bridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AppImportError as exc:
        print(f"bridge: error: {exc} The error was:", file=sys.stderr)
        cause = exc.__cause__ or exc
        traceback.print_exception(type(cause), cause, _user_frames(cause), file=sys.stderr)
        return EXIT_USAGE
    return 0


def serve(args: argparse.Namespace, mounts: list[tuple[str, str]]) -> None:
    """``bridge serve`` with parsed (and config-filled) arguments."""
    binds = [parse_bind(text) for text in args.bind or []]
    if binds and (args.host or args.port is not None or args.uds):
        raise UsageError(
            "--bind and --host/--port/--uds both name the address; use one or the other."
        )
    server = args.server or "uvicorn"
    # Read above for the settings bridge understands; gunicorn alone reads it itself too.
    config = args.config if server == "gunicorn" else None
    run(
        args.app,
        host=args.host or "127.0.0.1",
        port=args.port if args.port is not None else _env_int("PORT", 8000),
        uds=args.uds,
        binds=binds,
        workers=args.workers if args.workers is not None else _env_int("WEB_CONCURRENCY", 1),
        threads=args.threads,
        root_path=args.root_path or "",
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips
        or os.environ.get("FORWARDED_ALLOW_IPS")
        or "127.0.0.1",
        timeout=args.timeout,
        timeout_keep_alive=args.timeout_keep_alive,
        graceful_timeout=args.graceful_timeout,
        limit_concurrency=args.limit_concurrency,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        backlog=args.backlog,
        limit_request_line=args.limit_request_line,
        limit_request_fields=args.limit_request_fields,
        limit_request_field_size=args.limit_request_field_size,
        http=args.http,
        config=config,
        log_level=args.log_level or "info",
        access_log=args.access_log,
        reload=bool(args.reload),
        mounts=mounts,
        server=server,
        app_dir=args.app_dir,
        broadcast=args.broadcast or os.environ.get(BROADCAST_VARIABLE),
        access_log_format=_access_log_format(args),
        budgets={
            option: getattr(args, option)
            for option, *_ in BUDGET_FLAGS.values()
            if hasattr(args, option)  # the flags default to absent: None means "none"
        },
    )


def _access_log_format(args: argparse.Namespace) -> str | None:
    """gunicorn's access-log format when asked for: ``--access-logformat``, or the
    ``accesslog = "-"`` of a ``-c`` file (gunicorn's default format, as gunicorn means it)."""
    if args.access_logformat is not None:
        return str(args.access_logformat)
    if args.accesslog is None or args.server == "gunicorn":
        return None  # gunicorn reads its -c file, accesslog included
    if args.accesslog != "-":
        raise UsageError(
            f'accesslog = "{args.accesslog}": bridge serve writes the access log to stdout; '
            'use "-" and redirect it, or run bridge serve --server gunicorn -c FILE.'
        )
    return ""  # gunicorn's default format
