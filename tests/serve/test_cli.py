"""``bridge`` command line in process: parsing, defaults from the environment, every error."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
from pathlib import Path

import httpx
import pytest

from bridge import Bridge, __version__
from bridge.serve import cli, gunicorn_flags
from bridge.serve.cli import Recipe, build, load_env_file, main, parse_mount, startup_line
from bridge.serve.servers import ServerOptions
from bridge.wsgi import multiprocess as processes
from tests.apps import cli_apps

APPS = "tests.apps.cli_apps"


@pytest.fixture(autouse=True)
def _no_leaked_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """bridge serve sets BRIDGE_MULTIPROCESS for its workers; keep it out of later tests."""
    monkeypatch.setenv(processes.VARIABLE, "")


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``bridge argv`` expecting a user mistake; return the one stderr line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"bridge {__version__}\n"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: {serve,check,replay}" in capsys.readouterr().err


def test_unknown_server_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", f"{APPS}:pid_app", "--server", "waitress"])
    assert info.value.code == 2
    assert "argument --server: invalid choice: 'waitress'" in capsys.readouterr().err


def test_check_wsgi(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{APPS}:pid_app", "--threads", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"app: {APPS}:pid_app (WSGI application)"
    assert out[1] == "legacy app: wsgiref.validate.validator.<locals>.lint_app"
    assert out[2] == "threads: 8"


def test_check_app_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "cli_noapp:something_else", "--app-dir", "tests/apps"]) == 2
    assert capsys.readouterr().err == (
        'bridge: error: "cli_noapp:something_else" is neither a WSGI nor an ASGI application: '
        "it is a NoneType object, not a callable.\n"
    )


def test_check_bridge_keeps_its_pool(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{APPS}:bridged"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"app: {APPS}:bridged (Bridge)"
    assert out[2] == "threads: 4"


@pytest.mark.parametrize("command", ["check", "serve"])
def test_threads_for_an_app_with_its_own_bridge_is_refused(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert error_of(capsys, [command, f"{APPS}:bridged", "--threads", "8"]) == (
        f'bridge: error: --threads 8 does not reach "{APPS}:bridged", which builds its own '
        "Bridge (max_threads=4): set max_threads there, or drop --threads."
    )


def test_budget_flags_for_an_app_with_its_own_bridge_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["serve", f"{APPS}:bridged", "--body-timeout", "5", "--max-uploads", "10"]
    assert error_of(capsys, argv) == (
        f'bridge: error: --body-timeout, --max-uploads does not reach "{APPS}:bridged", which '
        "builds its own Bridge: set body_timeout=..., max_uploads=... there, or drop "
        "--body-timeout, --max-uploads."
    )
    assert error_of(capsys, ["serve", f"{APPS}:asgi_app", "--max-body-size", "none"]) == (
        f'bridge: error: --max-body-size does not reach "{APPS}:asgi_app", an ASGI '
        "application with no legacy request path; drop --max-body-size."
    )


@pytest.mark.parametrize(
    ("flag", "value", "sentence"),
    [
        ("--max-uploads", "0", "--max-uploads: Bridge(max_uploads=0): max_uploads must be"),
        ("--max-pending", "none", "--max-pending: Bridge(max_pending=None): max_pending must"),
        ("--body-timeout", "-1", "--body-timeout: Bridge(body_timeout=-1.0): body_timeout must"),
    ],
)
def test_bad_budget_values_name_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, sentence: str
) -> None:
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", flag, value]).startswith(
        f"bridge: error: {sentence}"
    )


def test_budget_flags_build_the_bridge_with_them() -> None:
    budgets: dict[str, float | int | None] = {
        "max_body_size": 10,
        "body_timeout": None,
        "body_deadline": 30.0,
        "max_uploads": 7,
        "max_pending": 3,
    }
    bridge = build(Recipe(f"{APPS}:pid_app", budgets=budgets)).loaded.bridge
    assert isinstance(bridge, Bridge)
    assert (bridge.limits.max_body_size, bridge.limits.body_timeout) == (10, None)
    assert bridge.limits.body_deadline == 30.0
    assert bridge.pool.max_pending == 3
    # The recipe reaches the workers as JSON: the budgets survive the trip.
    assert json.loads(json.dumps(cli.asdict(Recipe("x", budgets=budgets))))["budgets"] == budgets


def test_check_factory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{APPS}:create_app(2)"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"app: {APPS}:create_app(2) (Bridge)"
    assert out[2] == "threads: 2"


def test_check_asgi(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{APPS}:asgi_app"]) == 0
    assert capsys.readouterr().out == f"app: {APPS}:asgi_app (ASGI application)\n"


def test_check_lists_routes_websockets_and_mounts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{APPS}:migrated_app()"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"app: {APPS}:migrated_app() (Bridge)",
        "legacy app: wsgiref.validate.validator.<locals>.lint_app",
        "threads: 4",
        "async routes: 1",
        f"  GET,HEAD /items -> {APPS}:migrated_app.<locals>.items (async)",
        "websocket routes: 1",
        f"  /ws/echo -> {APPS}:migrated_app.<locals>.echo",
        "mounts: 1",
        f"  /v2 -> {APPS}:asgi_app",
    ]


@pytest.mark.parametrize("command", ["serve", "check"])
@pytest.mark.parametrize(
    ("app", "sentence"),
    [
        ("x:", 'Import string "x:" must be in format "<module>:<attribute>".'),
        ("bridge_no_such_module:app", 'Could not import module "bridge_no_such_module".'),
        (f"{APPS}:nothing", f'Attribute "nothing" not found in module "{APPS}".'),
        (
            f"{APPS}:not_an_app",
            f'"{APPS}:not_an_app" is neither a WSGI nor an ASGI application: '
            "it is an int object, not a callable.",
        ),
    ],
)
def test_app_string_mistakes(
    capsys: pytest.CaptureFixture[str], command: str, app: str, sentence: str
) -> None:
    assert error_of(capsys, [command, app]) == f"bridge: error: {sentence}"


def test_import_error_inside_the_module_shows_the_real_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "tests.apps.cli_broken"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == (
        'bridge: error: Importing module "tests.apps.cli_broken" raised an error. The error was:'
    )
    # The traceback starts in the user's module, not in bridge or importlib.
    assert lines[2].endswith('cli_broken.py", line 5, in <module>')
    assert lines[-1] == "ModuleNotFoundError: No module named 'bridge_missing_dependency_xyz'"
    assert "importer.py" not in err


@pytest.mark.parametrize("text", ["v2=m:app", "/v2", "/v2=", "=m:app"])
def test_mount_format(capsys: pytest.CaptureFixture[str], text: str) -> None:
    assert error_of(capsys, ["check", f"{APPS}:pid_app", "--mount", text]) == (
        f'bridge: error: --mount "{text}" must be in format "PREFIX=MODULE:ATTR", '
        'for example "/v2=myapi:app".'
    )


def test_parse_mount() -> None:
    assert parse_mount("/v2=pkg.api:app") == ("/v2", "pkg.api:app")


def test_mount_beside_an_asgi_app_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["check", f"{APPS}:asgi_app", "--mount", f"/v2={APPS}:asgi_app"]) == (
        f'bridge: error: --mount needs a WSGI application or a Bridge to mount beside, and "{APPS}'
        ':asgi_app" is an ASGI application; mount inside that application instead.'
    )


def test_mount_uses_bridge_mount() -> None:
    """Requests under the prefix reach the mounted app; the rest stay legacy."""
    built = build(Recipe(f"{APPS}:where_app", mounts=[("/v2", f"{APPS}:asgi_app")]))
    assert built.mounts == [("/v2", f"{APPS}:asgi_app")]

    async def fetch(path: str) -> str:
        transport = httpx.ASGITransport(app=built.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
            return response.text

    assert asyncio.run(fetch("/v2/items")).startswith("asgi ")
    assert asyncio.run(fetch("/v1/items")).startswith("|/v1/items|")


def test_mount_without_bridge_mount(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Bridge, "mount", raising=False)
    assert error_of(capsys, ["check", f"{APPS}:pid_app", "--mount", f"/v2={APPS}:asgi_app"]) == (
        "bridge: error: --mount needs Bridge.mount(), which this version of bridge lacks."
    )


def test_missing_server_names_the_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "granian" else real(name, *a),
    )
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", "--server", "granian"]) == (
        "bridge: error: --server granian needs the granian package: pip install granian"
    )


@pytest.mark.parametrize(
    ("server", "argv", "sentence"),
    [
        (
            "daphne",
            ["--workers", "2"],
            "daphne does not support --workers; drop it or choose --server "
            "uvicorn, gunicorn, hypercorn, granian.",
        ),
        (
            "granian",
            ["--max-requests", "10"],
            "granian does not support --max-requests; drop it or choose --server "
            "uvicorn, gunicorn, hypercorn.",
        ),
        (
            "hypercorn",
            ["--limit-concurrency", "10"],
            "hypercorn does not support --limit-concurrency; drop it or choose --server "
            "uvicorn, gunicorn, granian.",
        ),
        (
            "granian",
            ["--timeout-keep-alive", "10"],
            "granian does not support --keep-alive; drop it or choose --server "
            "uvicorn, gunicorn, hypercorn.",
        ),
        (
            "daphne",
            ["--graceful-timeout", "10"],
            "daphne does not support --graceful-timeout; drop it or choose --server "
            "uvicorn, gunicorn, hypercorn, granian.",
        ),
    ],
)
def test_unsupported_option_for_server(
    capsys: pytest.CaptureFixture[str], server: str, argv: list[str], sentence: str
) -> None:
    argv = ["serve", f"{APPS}:pid_app", "--server", server, *argv]
    assert error_of(capsys, argv) == f"bridge: error: {sentence}"


def test_reload_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", "--reload", "-w", "2"]) == (
        "bridge: error: --reload runs one process for development; drop --workers or --reload."
    )


def test_zero_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", "-w", "0"]) == (
        "bridge: error: --workers 0 must be 1 or more."
    )


@pytest.mark.parametrize("name", ["PORT", "WEB_CONCURRENCY"])
def test_environment_integers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "eighty")
    default = 8000 if name == "PORT" else 1
    assert error_of(capsys, ["serve", f"{APPS}:pid_app"]) == (
        f'bridge: error: The environment variable {name}="eighty" must be an integer, '
        f"such as {default}."
    )


def test_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLI_KEPT", "from the environment")
    for name in ("CLI_A", "CLI_B", "CLI_C"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n\nCLI_A=1\nexport CLI_B = 'two words'\nCLI_C=\"x=y\"\nCLI_KEPT=from the file\n"
    )
    load_env_file(str(path))
    import os

    assert os.environ["CLI_A"] == "1"
    assert os.environ["CLI_B"] == "two words"
    assert os.environ["CLI_C"] == "x=y"
    assert os.environ["CLI_KEPT"] == "from the environment"
    for name in ("CLI_A", "CLI_B", "CLI_C"):
        monkeypatch.delenv(name)


def test_env_file_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing.env"
    assert error_of(capsys, ["check", f"{APPS}:pid_app", "--env-file", str(path)]) == (
        f'bridge: error: Env file "{path}" could not be read; check the --env-file path.'
    )


def test_env_file_bad_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# ok\nJUST_A_WORD\n")
    assert error_of(capsys, ["check", f"{APPS}:pid_app", "--env-file", str(path)]) == (
        f'bridge: error: Line 2 of env file "{path}" must be in format "KEY=VALUE".'
    )


def test_startup_line_wsgi() -> None:
    built = build(Recipe(f"{APPS}:pid_app", threads=8))
    assert startup_line(built, "uvicorn", ServerOptions(workers=4)) == (
        f"bridge: serving {APPS}:pid_app (WSGI via bridge, 8 threads) with uvicorn on "
        "http://127.0.0.1:8000, 4 workers, 0 routes migrated"
    )


def test_startup_line_bridge_with_routes_on_uds() -> None:
    built = build(Recipe(f"{APPS}:migrated_app()"))
    options = ServerOptions(uds="/tmp/b.sock", root_path="/api")
    assert startup_line(built, "granian", options) == (
        f"bridge: serving {APPS}:migrated_app() (Bridge, 4 threads) with granian on "
        "unix:/tmp/b.sock, 1 worker, 1 route migrated"
    )


def test_startup_line_asgi_ipv6() -> None:
    built = build(Recipe(f"{APPS}:asgi_app"))
    options = ServerOptions(host="::1", port=9000, root_path="/api")
    assert startup_line(built, "hypercorn", options) == (
        f"bridge: serving {APPS}:asgi_app (ASGI) with hypercorn on "
        "http://[::1]:9000/api, 1 worker, 0 routes migrated"
    )


def test_worker_app_rebuilds_from_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_preloaded", None)
    recipe = {"app": f"{APPS}:pid_app", "threads": 3, "mounts": [], "app_dir": "."}
    monkeypatch.setenv(cli.RECIPE_VARIABLE, json.dumps({**recipe, "proxy_trusted": None}))
    app = cli._worker_app()
    assert isinstance(app, Bridge)
    assert app.max_threads == 3
    assert app.wsgi_app is cli_apps.pid_app


def test_worker_app_wraps_proxy_headers_for_servers_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    built = build(Recipe(f"{APPS}:pid_app", proxy_trusted="*"))
    assert isinstance(built.app, ProxyHeadersMiddleware)


def test_worker_app_needs_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_preloaded", None)
    monkeypatch.delenv(cli.RECIPE_VARIABLE, raising=False)
    with pytest.raises(RuntimeError) as info:
        cli._worker_app()
    assert str(info.value) == (
        "bridge.serve.cli:_worker_app is run by bridge serve, which sets BRIDGE_SERVE_RECIPE."
    )


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 2},
        {"reload": True},
        {"max_requests": 10},
        {"server": "granian"},
        {"server": "gunicorn"},
    ],
)
def test_run_with_an_object_cannot_start_processes(options: dict[str, object]) -> None:
    with pytest.raises(cli.UsageError) as info:
        cli.run(cli_apps.pid_app, **options)  # type: ignore[arg-type]
    assert str(info.value) == (
        "--workers, --reload, --max-requests, granian and gunicorn start processes that "
        "import the application: pass it as an import string such as "
        '"myproject.wsgi:application".'
    )


# -- gunicorn's command line, as gunicorn means it ------------------------------------


@pytest.mark.parametrize(
    "entry", [e for e in gunicorn_flags.ALL_FLAGS if e.status == "refused"], ids=lambda e: e.setting
)
def test_each_refused_gunicorn_flag_names_what_to_use(
    capsys: pytest.CaptureFixture[str], entry: gunicorn_flags.Flag
) -> None:
    for flag in entry.flags:
        assert error_of(capsys, ["serve", f"{APPS}:pid_app", flag, "x"]) == (
            f"bridge: error: {flag} is a gunicorn flag that bridge serve does not take: "
            f"{entry.note}."
        )


def test_every_gunicorn_flag_is_in_the_table() -> None:
    from gunicorn.config import Config

    known = {flag for entry in gunicorn_flags.ALL_FLAGS for flag in entry.flags}
    flags = {flag for s in Config().settings.values() for flag in (s.cli or [])}
    assert flags - known == set()


def test_the_deployment_guide_shows_the_flag_table() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    assert gunicorn_flags.flag_table() in guide


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--threads", "0"], "--threads 0 must be 1 or more (threads for the legacy app)."),
        (["--threads", "-3"], "--threads -3 must be 1 or more (threads for the legacy app)."),
        (["--max-requests", "-1"], "--max-requests -1 must be 0 or more."),
        (["--limit-request-line", "-1"], "--limit-request-line -1 must be 0 or more."),
        (["--limit-request-fields", "-2"], "--limit-request-fields -2 must be 0 or more."),
        (["--limit-request-field_size", "-4"], "--limit-request-field_size -4 must be 0 or more."),
        (["--keep-alive", "-1"], "--keep-alive -1 must be 0 or more."),
        (["--timeout", "-30"], "--timeout -30 must be 0 or more."),
        (["--backlog", "-5"], "--backlog -5 must be 0 or more."),
        (
            ["-b", "localhost:http"],
            '--bind "localhost:http" must be in format "HOST:PORT" or "unix:PATH", '
            'for example "0.0.0.0:8000".',
        ),
        (
            ["-b", "fd://3"],
            '--bind "fd://3": bridge serve binds its own sockets; give HOST:PORT or unix:PATH.',
        ),
        (
            ["-b", "127.0.0.1:8000", "--port", "9000"],
            "--bind and --host/--port/--uds both name the address; use one or the other.",
        ),
        (
            ["--server", "hypercorn", "--timeout", "30"],
            "hypercorn does not support --timeout; drop it or choose --server uvicorn, gunicorn.",
        ),
        (
            ["--server", "granian", "--http", "h11"],
            "granian does not support --http; drop it or choose --server uvicorn, gunicorn.",
        ),
        (
            ["--server", "granian", "-b", "127.0.0.1:8001", "-b", "127.0.0.1:8002"],
            "granian listens on one address, and --bind was given 2; keep one, or choose "
            "--server uvicorn, hypercorn or gunicorn.",
        ),
        (
            ["--server", "daphne", "--max-requests-jitter", "5"],
            "daphne does not support --max-requests-jitter; drop it or choose --server "
            "uvicorn, gunicorn.",
        ),
    ],
)
def test_command_line_mistakes(
    capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str
) -> None:
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", *argv]) == f"bridge: error: {sentence}"


@pytest.mark.parametrize("argv", [["--timeout-keep", "5"], ["--work", "2"], ["--time", "3"]])
def test_no_prefix_abbreviations(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", f"{APPS}:pid_app", *argv])
    assert info.value.code == 2
    assert f"unrecognized arguments: {' '.join(argv)}" in capsys.readouterr().err


def test_a_port_in_use_is_one_sentence_before_any_startup_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv in (["-b", f"127.0.0.1:{port}"], ["--port", str(port)]):
            assert error_of(capsys, ["serve", f"{APPS}:pid_app", *argv]) == (
                f'bridge: error: The address "127.0.0.1:{port}" is already in use; stop what '
                "listens there, or choose another --port or --bind."
            )


def test_check_a_file_name_suggests_the_app_string(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, ["check", "legacy.py"]) == (
        'bridge: error: "legacy.py" names a file; an app string names a module and its '
        'attribute: try "legacy:app".'
    )


def test_a_config_file_with_hooks_needs_gunicorn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 2\ndef on_starting(server):\n    pass\nhelper = 1\n")
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", "-c", str(conf)]) == (
        f'bridge: error: Config file "{conf}" sets on_starting, which bridge serve does not '
        "read on this server; use --server gunicorn (gunicorn reads the whole file, hooks "
        f"included) or gunicorn -k bridge.gunicorn.Worker -c {conf}."
    )
    missing = tmp_path / "nope.py"
    assert error_of(capsys, ["serve", f"{APPS}:pid_app", "-c", str(missing)]) == (
        f'bridge: error: Config file "{missing}" does not exist; check the -c path.'
    )


def test_a_config_file_fills_what_the_command_line_left(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        f'wsgi_app = "{APPS}:pid_app"\nbind = "0.0.0.0:9000"\nworkers = 3\n'
        "threads = 4\ntimeout = 60\nkeepalive = 7\nloglevel = 'WARNING'\n"
    )
    args = cli.build_parser().parse_args(["serve", "-c", str(conf), "-w", "2"])
    cli.apply_config(args)
    assert (args.app, args.bind, args.workers, args.threads) == (
        f"{APPS}:pid_app", ["0.0.0.0:9000"], 2, 4,
    )  # fmt: skip
    assert (args.timeout, args.timeout_keep_alive, args.log_level) == (60, 7, "warning")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0.0.0.0:8000", "0.0.0.0:8000"),
        ("localhost", "localhost:8000"),
        ("[::1]:9000", "[::1]:9000"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_bind_addresses(text: str, address: str) -> None:
    assert cli.parse_bind(text) == address


def test_several_workers_on_memory_with_an_sse_feed_are_warned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_BROADCAST_URL", "")
    feed = build(Recipe("tests.apps.lifecycle_app:sse_only"))
    warning = cli.broadcast_warning(feed, 2)
    assert warning is not None
    assert "(SSE /feed)" in warning
    assert "--broadcast redis://HOST:6379/0" in warning
    assert cli.broadcast_warning(feed, 1) is None
    both = build(Recipe("tests.apps.lifecycle_app:bridged"))
    assert "(websocket /ws)" in (cli.broadcast_warning(both, 2) or "")  # /events never subscribes


def test_a_django_project_run_from_the_folder_above_says_where_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What django-admin startproject mysite makes: mysite/manage.py, mysite/mysite/wsgi.py.
    package = tmp_path / "lc_mysite" / "lc_mysite"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text("application = None\n")
    (tmp_path / "lc_mysite" / "manage.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", "lc_mysite.wsgi:application"]) == 2
    assert capsys.readouterr().err == (
        'bridge: error: Could not import module "lc_mysite.wsgi". It is in the folder '
        "lc_mysite (a Django project, beside manage.py): run bridge from there, or pass "
        "--app-dir lc_mysite (as gunicorn's --chdir).\n"
    )


def test_an_accesslog_file_in_a_config_is_refused_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('accesslog = "/var/log/access.log"\n')
    assert main(["serve", f"{APPS}:pid_app", "-c", str(config)]) == 2
    assert capsys.readouterr().err == (
        'bridge: error: accesslog = "/var/log/access.log": bridge serve writes the access log '
        'to stdout; use "-" and redirect it, or run bridge serve --server gunicorn -c FILE.\n'
    )
