"""``bridge serve`` as a user runs it: a real process per test, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
APPS = "tests.apps.cli_apps"
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """A running ``bridge serve`` process and where to reach it."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, url: str) -> None:
        self.process = process
        self.log = log
        self.url = url

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """One request on a fresh connection, so workers get a chance to differ."""
        with httpx.Client(base_url=self.url, timeout=10) as client:
            return client.get(path, **kwargs)  # type: ignore[arg-type]

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", *args],
            cwd=ROOT,
            env=_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so workers die with it
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    # The whole group, so workers never outlive their parent; then reap the parent.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextmanager
def serve(
    tmp_path: Path,
    *args: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_path: str = "/ready",
    pass_port: bool = True,
) -> Iterator[Served]:
    """Start ``bridge serve args [--port port]`` and wait until it answers ``ready_path``."""
    port = port or free_port()
    argv = [*args, "--port", str(port)] if pass_port else [*args]
    log = tmp_path / f"serve-{port}.log"
    process = start(argv, log, env)
    served = Served(process, log, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"bridge serve exited with {process.returncode}:\n{served.output()}")
            try:
                served.get(ready_path)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"bridge serve did not answer in time:\n{served.output()}")
                time.sleep(0.1)
        yield served
    finally:
        stop(process)


def pids_seen(served: Served, want: int, attempts: int = 200) -> set[str]:
    pids: set[str] = set()
    for _ in range(attempts):
        response = served.get("/")
        assert response.status_code == 200
        pids.add(response.text.rsplit("|", 1)[-1])
        if len(pids) >= want:
            break
    return pids


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian", "daphne"])
def test_each_server_serves_with_root_path(tmp_path: Path, server: str) -> None:
    """--server and --root-path: the legacy app sees the prefix as SCRIPT_NAME."""
    with serve(tmp_path, f"{APPS}:where_app", "--server", server, "--root-path", "/api") as s:
        response = s.get("/who")
        assert response.status_code == 200
        script_name, path_info, remote, scheme, _, pid = response.text.split("|")
        assert (script_name, path_info, remote, scheme) == ("/api", "/who", "127.0.0.1", "http")
        assert pid.isdigit()
        assert (
            f"bridge: serving {APPS}:where_app (WSGI via bridge, 32 threads) with {server} on "
            in (s.output())
        )


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian"])
def test_two_workers_serve_from_two_processes(tmp_path: Path, server: str) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "--server", server, "--workers", "2") as s:
        assert len(pids_seen(s, 2)) == 2
        assert ", 2 workers, 0 routes migrated" in s.output()


def test_web_concurrency_sets_workers(tmp_path: Path) -> None:
    port = free_port()
    env = {"WEB_CONCURRENCY": "2", "PORT": str(port)}
    with serve(tmp_path, f"{APPS}:where_app", port=port, env=env, pass_port=False) as s:
        assert len(pids_seen(s, 2)) == 2
        assert f"on http://127.0.0.1:{port}, 2 workers," in s.output()


def test_workers_flag_wins_over_web_concurrency(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "-w", "1", env={"WEB_CONCURRENCY": "3"}) as s:
        assert len(pids_seen(s, 2, attempts=10)) == 1
        assert ", 1 worker," in s.output()


def test_port_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port)}
    with serve(tmp_path, f"{APPS}:where_app", port=port, env=env, pass_port=False) as s:
        assert s.get("/").status_code == 200
        assert f"on http://127.0.0.1:{port}," in s.output()


def test_env_file_sets_port_and_app_environment(tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / "app.env"
    env_file.write_text(f"PORT={port}\nCLI_APPS_GREETING='hello there'\n")
    with serve(
        tmp_path, f"{APPS}:where_app", "--env-file", str(env_file), port=port, pass_port=False
    ) as s:
        assert s.get("/").text.split("|")[4] == "hello there"


def test_mount(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "--mount", f"/v2={APPS}:asgi_app") as s:
        assert s.get("/v2/items").text.startswith("asgi ")
        assert s.get("/v1/items").text.startswith("|/v1/items|")


def test_migrated_routes(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:migrated_app()") as s:
        assert s.get("/items").text == "items"
        assert s.get("/v2/x").text.startswith("asgi ")
        assert s.get("/other").text.startswith("|/other|")
        assert "(Bridge, 4 threads) with uvicorn" in s.output()
        assert ", 1 worker, 1 route migrated" in s.output()


def test_factory_with_threads(tmp_path: Path) -> None:
    with serve(tmp_path, f'{APPS}:create_app(4, name="where")') as s:
        assert s.get("/x").text.startswith("|/x|")
        assert "(Bridge, 4 threads)" in s.output()


def test_uds(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sock"
    log = tmp_path / "uds.log"
    process = start([f"{APPS}:where_app", "--uds", str(path)], log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(path))
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://local", timeout=10) as client:
            response = client.get("/over-uds")
        assert response.text.startswith("|/over-uds|")
        assert f"on unix:{path}," in log.read_text()
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("flags", "remote", "scheme"),
    [
        ([], "10.1.2.3", "https"),
        (["--forwarded-allow-ips", "*"], "10.1.2.3", "https"),
        (["--forwarded-allow-ips", "10.9.9.9"], "127.0.0.1", "http"),
        (["--no-proxy-headers"], "127.0.0.1", "http"),
    ],
)
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_proxy_headers(
    tmp_path: Path, server: str, flags: list[str], remote: str, scheme: str
) -> None:
    headers = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"}
    with serve(tmp_path, f"{APPS}:where_app", "--server", server, *flags) as s:
        fields = s.get("/", headers=headers).text.split("|")
        assert (fields[2], fields[3]) == (remote, scheme)


def test_forwarded_allow_ips_from_the_environment(tmp_path: Path) -> None:
    headers = {"X-Forwarded-For": "10.1.2.3"}
    port = free_port()
    env = {"FORWARDED_ALLOW_IPS": "10.9.9.9"}
    with serve(tmp_path, f"{APPS}:where_app", port=port, env=env) as s:
        assert s.get("/", headers=headers).text.split("|")[2] == "127.0.0.1"


def test_access_log_and_log_level(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "--access-log", "--log-level", "info") as s:
        s.get("/logged")
        time.sleep(0.2)
        assert '"GET /logged HTTP/1.1" 200' in s.output()
        assert "Application startup complete" in s.output()
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    with serve(quiet, f"{APPS}:where_app", "--no-access-log", "--log-level", "warning") as s:
        s.get("/unlogged")
        time.sleep(0.2)
        assert "/unlogged" not in s.output()
        assert "Application startup complete" not in s.output()
        assert "bridge: serving" in s.output()


def test_limit_concurrency(tmp_path: Path) -> None:
    """Past --limit-concurrency the server answers 503 instead of queueing."""
    with serve(tmp_path, f"{APPS}:slow_app", "--limit-concurrency", "2") as s:
        slow: list[int] = []
        request = threading.Thread(target=lambda: slow.append(s.get("/?2").status_code))
        request.start()
        time.sleep(0.5)
        assert s.get("/").status_code == 503
        request.join(timeout=15)
        assert slow == [200]


def test_budget_flags_answer_413_and_408(tmp_path: Path) -> None:
    """--max-body-size and --body-timeout reach the Bridge bridge serve builds."""
    argv = [f"{APPS}:pid_app", "--max-body-size", "10", "--body-timeout", "0.5"]
    with serve(tmp_path, *argv) as s:
        with httpx.Client(base_url=s.url, timeout=10) as client:
            assert client.post("/", content=b"x" * 20).status_code == 413
            assert client.post("/", content=b"x" * 5).status_code == 200
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            # Three of the eight bytes it declares, then nothing: a stalled upload.
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nabc")
            started = time.monotonic()
            response = conn.recv(65536)
            assert response.startswith(b"HTTP/1.1 408"), response
            assert time.monotonic() - started < 5


def test_timeout_keep_alive(tmp_path: Path) -> None:
    """An idle keep-alive connection is closed after --timeout-keep-alive seconds."""
    with serve(tmp_path, f"{APPS}:where_app", "--timeout-keep-alive", "1") as s:
        port = int(s.url.rsplit(":", 1)[1])
        pid = s.get("/").text.rsplit("|", 1)[1].encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"|" + pid):
                chunk = conn.recv(65536)
                assert chunk, response
                response += chunk
            assert response.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert conn.recv(65536) == b""  # closed by the server
            assert 0.5 < time.monotonic() - started < 5


def test_max_requests_replaces_the_worker(tmp_path: Path) -> None:
    """--max-requests with one worker: the worker is replaced, the server keeps answering."""
    with serve(tmp_path, f"{APPS}:where_app", "--max-requests", "3", ready_path="/") as s:
        pids = set()
        dropped = 0
        while len(pids) < 2:
            try:
                pids.add(s.get("/").text.rsplit("|", 1)[-1])
            except httpx.RemoteProtocolError:
                # uvicorn closes a connection it accepted but had not read when the
                # worker retires; a client or proxy retries it (documented).
                dropped += 1
                assert dropped <= 3
        assert s.process.poll() is None


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian"])
def test_sigterm_drains_in_flight_requests(tmp_path: Path, server: str) -> None:
    args = (f"{APPS}:slow_app", "--server", server, "--graceful-timeout", "10")
    with serve(tmp_path, *args) as s:
        result: list[httpx.Response] = []
        request = threading.Thread(target=lambda: result.append(s.get("/?1.5")))
        request.start()
        time.sleep(0.5)
        s.process.send_signal(signal.SIGTERM)
        request.join(timeout=15)
        assert [r.text for r in result] == ["done"]
        # uvicorn re-raises the signal once drained, so its exit status is -SIGTERM.
        assert s.process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_graceful_timeout_bounds_the_drain(tmp_path: Path) -> None:
    """A request longer than --graceful-timeout is cancelled and the server exits."""
    with serve(tmp_path, f"{APPS}:slow_app", "--graceful-timeout", "1") as s:
        result: list[int] = []
        request = threading.Thread(target=lambda: result.append(s.get("/?6").status_code))
        request.start()
        time.sleep(0.5)
        started = time.monotonic()
        s.process.send_signal(signal.SIGTERM)
        s.process.wait(timeout=15)
        request.join(timeout=15)
        assert time.monotonic() - started < 5.5
        assert result == [500]
        # The legacy app is wrapped in wsgiref's validator, which replaces wsgi.input.
        assert "AttributeError" not in s.output()


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian"])
def test_sighup_replaces_the_workers(tmp_path: Path, server: str) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "--server", server, "-w", "2") as s:
        before = pids_seen(s, 2)
        s.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        after: set[str] = set()
        while not after - before and time.monotonic() < deadline:
            # A request may fall between the old workers and the new ones.
            with suppress(httpx.TransportError):
                after.add(s.get("/").text.rsplit("|", 1)[-1])
            time.sleep(0.05)
        assert after - before
        assert s.process.poll() is None


def test_sigint_stops(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:where_app") as s:
        s.process.send_signal(signal.SIGINT)
        assert s.process.wait(timeout=15) == 0


def test_reload_serves(tmp_path: Path) -> None:
    with serve(tmp_path, f"{APPS}:where_app", "--reload") as s:
        assert s.get("/dev").text.startswith("|/dev|")


def test_deployment_command_from_the_docs(tmp_path: Path) -> None:
    """The gunicorn command line in docs/deployment.md, flag for flag, under bridge serve."""
    port = free_port()
    args = [
        f"{APPS}:where_app",
        "-w", "2",
        "--threads", "8",
        "-b", f"127.0.0.1:{port}",
        "--timeout", "30",
        "--keep-alive", "5",
        "--graceful-timeout", "30",
        "--max-requests", "1000",
        "--max-requests-jitter", "50",
        "--worker-connections", "1000",
        "--forwarded-allow-ips", "*",
    ]  # fmt: skip
    with serve(tmp_path, *args, port=port, pass_port=False) as s:
        assert len(pids_seen(s, 2)) == 2
        fields = s.get("/", headers={"X-Forwarded-For": "10.1.2.3"}).text.split("|")
        assert fields[2] == "10.1.2.3"
        assert (
            f"bridge: serving {APPS}:where_app (WSGI via bridge, 8 threads) with uvicorn on "
            f"http://127.0.0.1:{port}, 2 workers, 0 routes migrated"
        ) in s.output()


GUNICORN_APP = "tests.gunicorn.app:app"


def test_bind_twice_tcp_and_unix(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "app.sock"
    args = (GUNICORN_APP, "-b", f"127.0.0.1:{port}", "-b", f"unix:{path}")
    with serve(tmp_path, *args, port=port, pass_port=False, ready_path="/") as s:
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://unix") as client:
            assert client.get("/x").json()["path"] == "/x"
        assert s.get("/y").json()["path"] == "/y"
        assert f"on http://127.0.0.1:{port}, unix:{path}, 1 worker" in s.output()


@pytest.mark.parametrize(("server", "workers"), [("uvicorn", 1), ("uvicorn", 2), ("gunicorn", 2)])
def test_wsgi_multiprocess_follows_the_worker_count(
    tmp_path: Path, server: str, workers: int
) -> None:
    args = (GUNICORN_APP, "--server", server, "-w", str(workers))
    with serve(tmp_path, *args, ready_path="/") as s:
        assert s.get("/").json()["multiprocess"] is (workers > 1)


def test_timeout_on_one_uvicorn_process_says_what_it_does(tmp_path: Path) -> None:
    with serve(tmp_path, GUNICORN_APP, "--timeout", "30", ready_path="/") as s:
        assert (
            "bridge: note: --timeout 30 is gunicorn's worker timeout; a single uvicorn process "
            "has no supervisor to restart it, so it has no effect here (use --workers 2 or "
            "more, or --server gunicorn)."
        ) in s.output()


def http10_stream(url: str) -> bytes:
    host, _, port = url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    ("server", "http"), [("uvicorn", "h11"), ("uvicorn", "httptools"), ("gunicorn", "h11")]
)
def test_a_streamed_response_to_http_1_0_is_never_chunked(
    tmp_path: Path, server: str, http: str
) -> None:
    # uvicorn's httptools protocol would chunk even for HTTP/1.0 (issue 17); bridge holds
    # a streamed body for an HTTP/1.0 request and sends it with a Content-Length.
    args = (GUNICORN_APP, "--server", server, "--http", http)
    with serve(tmp_path, *args, ready_path="/") as s:
        head, _, body = http10_stream(s.url).partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"content-length: 21" in head.lower()
        assert body == b"part 0\npart 1\npart 2\n"


def test_server_gunicorn_runs_the_config_file_hooks(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    conf = ROOT / "tests" / "gunicorn" / "hooks.conf.py"
    args = (GUNICORN_APP, "--server", "gunicorn", "-c", str(conf), "-w", "2", "--threads", "4")
    env = {"BRIDGE_GUNICORN_MARKERS": str(markers)}
    with serve(tmp_path, *args, env=env, ready_path="/") as s:
        assert len(pids_seen_json(s, 2)) == 2
        assert "(WSGI via bridge, 4 threads) with gunicorn on" in s.output()
        s.process.send_signal(signal.SIGTERM)
        assert s.process.wait(timeout=20) == 0, s.output()
    for hook in ("on_starting", "post_fork", "post_worker_init", "worker_exit", "on_exit"):
        assert list(markers.glob(f"{hook}-*")), f"{hook} did not run:\n{s.output()}"


def pids_seen_json(served: Served, want: int, attempts: int = 200) -> set[int]:
    pids: set[int] = set()
    for _ in range(attempts):
        pids.add(served.get("/").json()["pid"])
        if len(pids) >= want:
            break
    return pids


@pytest.mark.parametrize(
    ("app", "sentence"),
    [
        ("myproject.wsgi", 'Could not import module "myproject.wsgi".'),
        ("x:", 'Import string "x:" must be in format "<module>:<attribute>".'),
        (f"{APPS}:nothing", f'Attribute "nothing" not found in module "{APPS}".'),
    ],
)
def test_bad_app_string_exits_with_the_sentence(tmp_path: Path, app: str, sentence: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", app, "--port", str(free_port())],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == f"bridge: error: {sentence}\n"
    assert "Traceback" not in result.stdout + result.stderr


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bridge"
    if not script.exists():
        pytest.skip("the bridge console script is not installed in this environment")
    result = subprocess.run(
        [str(script), "check", f"{APPS}:pid_app"], cwd=ROOT, env=_env(None), capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.startswith(f"app: {APPS}:pid_app (WSGI application)\n")


def test_run_serves_an_application_object(tmp_path: Path) -> None:
    """``bridge.cli.run`` takes the application itself, as ``uvicorn.run`` does."""
    port = free_port()
    log = tmp_path / "run.log"
    code = (
        "from bridge.serve.cli import run; from tests.apps.cli_apps import where_app; "
        f"run(where_app, port={port}, threads=2)"
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=_env(None), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        served = Served(process, log, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, served.output()
            try:
                response = served.get("/obj")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, served.output()
                time.sleep(0.1)
        assert response.text.startswith("|/obj|")
        assert "(WSGI via bridge, 2 threads) with uvicorn" in served.output()
    finally:
        stop(process)


def test_gunicorn_request_limits_under_bridge_serve(tmp_path: Path) -> None:
    args = (
        GUNICORN_APP, "--limit-request-line", "100", "--limit-request-fields", "20",
        "--limit-request-field_size", "200", "--backlog", "64",
    )  # fmt: skip
    with serve(tmp_path, *args, ready_path="/") as s:
        assert s.get("/" + "a" * 50).status_code == 200
        assert s.get("/" + "a" * 120).status_code == 414
        assert s.get("/", headers={f"x-h{i}": "v" for i in range(25)}).status_code == 431
        assert s.get("/", headers={"x-big": "v" * 300}).status_code == 431


def test_gunicorn_recycling_keeps_the_server_and_its_metrics_directory(tmp_path: Path) -> None:
    """Two gunicorn workers recycled every 20 requests: all 400 answer, the server lives.

    A worker that exits unwinds through the frame that created the shared metrics
    directory; only the process that made it may remove it, or the next worker cannot
    boot and gunicorn halts the whole server.
    """
    args = (f"{APPS}:where_app", "--server", "gunicorn", "--workers", "2", "--max-requests", "20")
    temporary = tmp_path / "tmp"  # where bridge serve makes the metrics directory
    temporary.mkdir()
    with serve(tmp_path, *args, ready_path="/", env={"TMPDIR": str(temporary)}) as s:
        pids: set[str] = set()
        statuses = []
        for _ in range(400):
            response = s.get("/")
            statuses.append(response.status_code)
            pids.add(response.text.rsplit("|", 1)[-1])
        assert statuses == [200] * 400
        assert len(pids) >= 10  # the workers really were replaced, several times over
        assert s.process.poll() is None
        assert "FileNotFoundError" not in s.output()
        (directory,) = temporary.glob("bridge-metrics-*")
        # The process that made it removes it, when it exits.
        s.process.send_signal(signal.SIGTERM)
        s.process.wait(40)
        assert not directory.exists(), s.output()
