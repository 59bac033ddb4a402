"""gunicorn's settings, and what ``bridge serve`` does with each: its flags and its config file.

Every command-line flag gunicorn documents is in ``FLAGS``, as one of:

- ``same``: ``bridge serve`` takes the flag and it means what it means under gunicorn;
- ``mapped``: ``bridge serve`` takes it and does the nearest thing (the note says what);
- ``refused``: ``bridge serve`` stops with a sentence that names what to use instead.

Under ``gunicorn -k bridge.gunicorn.Worker`` gunicorn reads every flag itself; the notes
in ``WORKER`` say where that worker gives one a meaning of its own.
docs/deployment.md shows this table; a test holds the two equal.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["same", "mapped", "refused"]

_KEEP = "run gunicorn -k bridge.gunicorn.Worker with it, or bridge serve --server gunicorn -c FILE"


@dataclass(frozen=True)
class Flag:
    """One gunicorn setting: its flags, what ``bridge serve`` does, and why."""

    setting: str
    flags: tuple[str, ...]
    status: Status
    note: str


def _f(setting: str, flags: str, status: Status, note: str) -> Flag:
    return Flag(setting, tuple(flags.split()), status, note)


FLAGS: tuple[Flag, ...] = (
    # What bridge serve reads as gunicorn does.
    _f("bind", "-b --bind", "same", "`HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`; repeatable"),
    _f("workers", "-w --workers", "same", "default `$WEB_CONCURRENCY`, else 1"),
    _f(
        "config",
        "-c --config",
        "mapped",
        "the settings in this table; with `--server gunicorn` gunicorn reads the whole file, "
        "hooks included",
    ),
    _f(
        "threads",
        "--threads",
        "mapped",
        "`Bridge(max_threads=)`, default 32: this worker is asynchronous, so gunicorn's "
        "default of one thread (one request at a time) does not carry over",
    ),
    _f(
        "timeout",
        "-t --timeout",
        "mapped",
        "gunicorn restarts a worker silent for this long; uvicorn's supervisor (`-w 2` or "
        "more) restarts a worker that misses its health check for this long; with one "
        "uvicorn process there is no supervisor, and bridge says so",
    ),
    _f(
        "graceful_timeout",
        "--graceful-timeout",
        "same",
        "on SIGTERM, in-flight requests get this long to finish",
    ),
    _f("keepalive", "--keep-alive", "same", "seconds an idle connection stays open"),
    _f(
        "max_requests",
        "--max-requests",
        "same",
        "a worker is replaced after this many requests, also with `-w 1`",
    ),
    _f("max_requests_jitter", "--max-requests-jitter", "same", "uvicorn and gunicorn only"),
    _f(
        "forwarded_allow_ips",
        "--forwarded-allow-ips",
        "same",
        "default `$FORWARDED_ALLOW_IPS`, else 127.0.0.1",
    ),
    _f("root_path", "--root-path", "same", "the prefix a proxy strips, seen as `SCRIPT_NAME`"),
    _f("loglevel", "--log-level", "same", "critical, error, warning, info, debug"),
    _f("reload", "--reload", "same", "development only, one process"),
    _f("backlog", "--backlog", "same", "uvicorn, hypercorn and gunicorn"),
    _f(
        "limit_request_line",
        "--limit-request-line",
        "same",
        "longer request lines get 414, as gunicorn answers; 0 for no limit",
    ),
    _f(
        "limit_request_fields",
        "--limit-request-fields",
        "mapped",
        "`Bridge(max_header_count=)`; more header fields get 431",
    ),
    _f(
        "limit_request_field_size",
        "--limit-request-field_size",
        "same",
        "a longer header field gets 431; 0 for no limit",
    ),
    _f(
        "worker_connections",
        "--worker-connections",
        "mapped",
        "`--limit-concurrency`: past it new requests get 503",
    ),
    _f("raw_env", "-e --env", "refused", "use --env-file FILE (`KEY=VALUE` lines)"),
    _f("chdir", "--chdir", "refused", "use --app-dir DIR, added to `sys.path`"),
    _f("pythonpath", "--pythonpath", "refused", "use --app-dir DIR, added to `sys.path`"),
    _f(
        "check_config",
        "--check-config",
        "refused",
        "use bridge check APP, which imports the app and says what would be served",
    ),
    _f(
        "worker_class",
        "-k --worker-class",
        "refused",
        "bridge serve picks the worker: use --server gunicorn, which runs "
        "bridge.gunicorn.Worker, or run gunicorn -k bridge.gunicorn.Worker",
    ),
    _f(
        "accesslog",
        "--access-logfile",
        "mapped",
        '`-` only: gunicorn\'s access lines on stdout (as `-c` `accesslog = "-"`); '
        "for a file, redirect it, or " + _KEEP,
    ),
    _f(
        "access_log_format",
        "--access-logformat",
        "same",
        "gunicorn's format and atoms, written by gunicorn's own logger (needs gunicorn)",
    ),
    _f(
        "errorlog",
        "--error-logfile --log-file",
        "refused",
        "bridge serve logs to stderr; redirect it, or " + _KEEP,
    ),
    _f("daemon", "-D --daemon", "refused", "run bridge serve under systemd or a supervisor"),
    _f(
        "preload_app",
        "--preload",
        "refused",
        "bridge serve imports the app once before the workers start to check it; " + _KEEP,
    ),
    _f(
        "sendfile",
        "--no-sendfile",
        "refused",
        "bridge sends files through the server (`http.response.pathsend` where offered)",
    ),
    _f("http_protocols", "--http-protocols", "refused", "use --http h11 or httptools (uvicorn)"),
    _f("http_parser", "--http-parser", "refused", "use --http h11 or httptools (uvicorn)"),
)

# Every other setting gunicorn has a flag for: refused, with the same way to keep it.
_REST = (
    "control_socket --control-socket", "control_socket_disable --no-control-socket",
    "control_socket_mode --control-socket-mode", "print_config --print-config",
    "reload_engine --reload-engine", "reload_extra_files --reload-extra-file", "spew --spew",
    "dirty_apps --dirty-app", "dirty_graceful_timeout --dirty-graceful-timeout",
    "dirty_threads --dirty-threads", "dirty_timeout --dirty-timeout",
    "dirty_workers --dirty-workers", "http2_cleartext --http2-cleartext",
    "http2_initial_window_size --http2-initial-window-size",
    "http2_max_concurrent_streams --http2-max-concurrent-streams",
    "http2_max_frame_size --http2-max-frame-size",
    "http2_max_header_list_size --http2-max-header-list-size",
    "capture_output --capture-output",
    "disable_redirect_access_to_syslog --disable-redirect-access-to-syslog",
    "dogstatsd_tags --dogstatsd-tags", "enable_backlog_metric --enable-backlog-metric",
    "enable_stdio_inheritance -R --enable-stdio-inheritance", "logconfig --log-config",
    "logconfig_json --log-config-json", "logger_class --logger-class",
    "statsd_host --statsd-host", "statsd_prefix --statsd-prefix", "syslog --log-syslog",
    "syslog_addr --log-syslog-to", "syslog_facility --log-syslog-facility",
    "syslog_prefix --log-syslog-prefix", "proc_name -n --name", "ca_certs --ca-certs",
    "cert_reqs --cert-reqs", "certfile --certfile", "ciphers --ciphers",
    "do_handshake_on_connect --do-handshake-on-connect", "keyfile --keyfile",
    "ssl_version --ssl-version", "suppress_ragged_eofs --suppress-ragged-eofs",
    "casefold_http_method --casefold-http-method", "forwarder_headers --forwarder-headers",
    "group -g --group", "header_map --header-map", "initgroups --initgroups",
    "paste --paste --paster", "permit_obsolete_folding --permit-obsolete-folding",
    "permit_unconventional_http_method --permit-unconventional-http-method",
    "permit_unconventional_http_version --permit-unconventional-http-version",
    "pidfile -p --pid", "protocol --protocol", "proxy_allow_ips --proxy-allow-from",
    "proxy_protocol --proxy-protocol", "raw_paste_global_conf --paste-global",
    "reuse_port --reuse-port", "strip_header_spaces --strip-header-spaces",
    "umask -m --umask", "user -u --user", "uwsgi_allow_ips --uwsgi-allow-from",
    "worker_tmp_dir --worker-tmp-dir",
    "asgi_disconnect_grace_period --asgi-disconnect-grace-period",
    "asgi_lifespan --asgi-lifespan", "asgi_loop --asgi-loop",
    "websocket_max_message_size --websocket-max-message-size",
)  # fmt: skip

ALL_FLAGS: tuple[Flag, ...] = FLAGS + tuple(
    Flag(text.split()[0], tuple(text.split()[1:]), "refused", _KEEP) for text in _REST
)

# Where bridge.gunicorn.Worker gives a gunicorn setting a meaning of its own.
WORKER: dict[str, str] = {
    "threads": "`Bridge(max_threads=)` for a WSGI app; without it, bridge's default of 32",
    "limit_request_fields": "also `Bridge(max_header_count=)` for a WSGI app",
    "limit_request_line": "checked by bridge (uvicorn has no such limit), answered 414",
    "limit_request_field_size": "checked by bridge, answered 431",
    "worker_connections": "uvicorn's `limit_concurrency`: past it, 503",
    "access_log_format": "bridge writes each access line through gunicorn's logger",
    "keepalive": "uvicorn's `timeout_keep_alive`",
    "graceful_timeout": "uvicorn's `timeout_graceful_shutdown` too",
    "root_path": "uvicorn's `root_path`",
    "websocket_max_message_size": "uvicorn's `ws_max_size`",
    "http_protocols": "no effect: uvicorn serves HTTP/1.1 (HTTP/2 belongs in the proxy)",
    "http_parser": "no effect: use bridge.gunicorn.H11Worker for h11",
    "sendfile": "no effect: bridge sends files through the server",
    "asgi_disconnect_grace_period": "no effect: an option of gunicorn's own -k asgi",
    "asgi_lifespan": "no effect: bridge runs the lifespan (`Bridge(on_startup=...)`)",
    "asgi_loop": "no effect: uvloop when installed, as uvicorn chooses",
    **{
        name: "no effect: uvicorn serves HTTP/1.1"
        for name in (
            "http2_cleartext",
            "http2_initial_window_size",
            "http2_max_concurrent_streams",
            "http2_max_frame_size",
            "http2_max_header_list_size",
        )
    },
}

_BY_FLAG = {flag: entry for entry in ALL_FLAGS for flag in entry.flags}
_BY_SETTING = {entry.setting: entry for entry in ALL_FLAGS}


def refused_flag(argv: list[str]) -> str | None:
    """The sentence refusing the first gunicorn flag in ``argv`` that bridge serve lacks."""
    for word in argv:
        if word == "--":
            return None
        flag = word.partition("=")[0]
        entry = _BY_FLAG.get(flag)
        if entry is not None and entry.status == "refused":
            return f"{flag} is a gunicorn flag that bridge serve does not take: {entry.note}."
    return None


def read_config(path: str, understood: set[str]) -> dict[str, Any]:
    """The gunicorn settings in the config file ``path`` (Python, run as gunicorn runs it).

    Names that are no gunicorn setting are ignored, as gunicorn ignores them. A setting
    outside ``understood`` raises ``ValueError`` with the sentence that says what to do.
    """
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ValueError(f'Config file "{path}" does not exist; check the -c path.') from None
    settings = {
        name: value
        for name, value in namespace.items()
        if name in _BY_SETTING or name in HOOKS or name == "wsgi_app"
    }
    unknown = sorted(name for name in settings if name not in understood)
    if unknown:
        raise ValueError(
            f'Config file "{path}" sets {", ".join(unknown)}, which bridge serve does not read '
            f"on this server; use --server gunicorn (gunicorn reads the whole file, hooks "
            f"included) or gunicorn -k bridge.gunicorn.Worker -c {path}."
        )
    return settings


# gunicorn's server hooks: functions a config file defines; only gunicorn runs them.
HOOKS = frozenset(
    {
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
        "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
        "worker_exit", "nworkers_changed", "on_exit", "ssl_context",
    }
)  # fmt: skip


def flag_table() -> str:
    """The Markdown table docs/deployment.md shows."""
    rows = ["| gunicorn flag | `bridge serve` | notes | under `-k bridge.gunicorn.Worker` |"]
    rows.append("|---|---|---|---|")
    for entry in ALL_FLAGS:
        flags = " ".join(f"`{flag}`" for flag in entry.flags)
        worker = WORKER.get(entry.setting, "as gunicorn")
        rows.append(f"| {flags} | {entry.status} | {entry.note} | {worker} |")
    return "\n".join(rows)
