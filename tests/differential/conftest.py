"""Servers for the differential tests: each app under gunicorn (sync) and under uvicorn + bridge.

One pair of servers per application per session. Each test gets a ``Differ`` that sends
the same request to both, each with its own client and cookie jar, and asserts that
the two responses are equal once the normalisations listed in ``NORMALISATIONS`` are
applied. Everything not listed there is compared exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
DJANGO_DIR = HERE / "djangoproject"
REPO = HERE.parent.parent

STARTUP_TIMEOUT = 30.0  # seconds; two cold Django imports on a busy 2-core machine
REQUEST_TIMEOUT = 30.0

DJANGO_ADMIN_USER = "grace"
DJANGO_ADMIN_PASSWORD = "differential-Tests-pw-42"

# werkzeug builds a 405's Allow header from a set, whose order follows the string hash
# seed of the process: without a shared seed, two processes of the same app differ.
FIXED_HASH_SEED = {"PYTHONHASHSEED": "0"}

# Headers the two servers set themselves, not the application: never compared.
# * date: the clock moves between the two requests.
# * server: "gunicorn" versus "uvicorn"; it names the server, which is the point.
# * connection: gunicorn's sync worker closes every connection ("Connection: close"),
#   uvicorn keeps it alive; that is connection management, not the response.
# * transfer-encoding: framing only. httpx has already removed the chunking, so the
#   body bytes compared below are what the application produced.
SERVER_HEADERS = frozenset({"date", "server", "connection", "transfer-encoding"})

# Every normalisation applied before two responses are compared, and why.
NORMALISATIONS: tuple[str, ...] = (
    "Drop Date, Server, Connection and Transfer-Encoding (see SERVER_HEADERS).",
    # bridge adds a Content-Length when the application returned its whole body
    # before any of it was sent (a list, or Django's bytes content); gunicorn then
    # sends Transfer-Encoding: chunked. This is a deliberate improvement: a client or
    # proxy can tell a complete response from a cut one. The value is still checked:
    # it must equal the body length received.
    "Drop a Content-Length that only bridge sent, after checking it equals the body length.",
    # Header order across different names carries no meaning (RFC 9110 5.3); the order
    # of repeated fields of one name (Set-Cookie) is kept and compared.
    "Compare headers as name -> [values in order], names lowercased.",
    # Each server listens on its own free port, so the Host header and any absolute URL
    # the app builds from it differ by exactly that port.
    "Replace 127.0.0.1:<this server's port> with 127.0.0.1:PORT in headers and body.",
    # The rest differ per request by design (time or randomness) and are scrubbed by the
    # regular expressions in SCRUBS, each with its own reason.
    "Apply SCRUBS to header values and bodies.",
    # Not a rewrite of the response but of the environment: see FIXED_HASH_SEED.
    "Run both servers with PYTHONHASHSEED=0.",
    # ASGI's http.response.start has a status code and no reason phrase, so the server
    # writes the standard phrase ("404 Not Found") where gunicorn passes the app's own
    # ("404 NOT FOUND" from werkzeug). RFC 9112 4: a client SHOULD ignore the reason
    # phrase. test_custom_reason_phrase records this limitation.
    "Do not compare the reason phrase.",
)


@dataclass(frozen=True)
class Scrub:
    """A value that legitimately differs between two runs, replaced before comparing.

    ``where`` names the response headers it applies to, or ``"body"``.
    """

    why: str
    where: frozenset[str]
    pattern: re.Pattern[str]
    replacement: str


SET_COOKIE = frozenset({"set-cookie"})

SCRUBS: tuple[Scrub, ...] = (
    Scrub(
        "A cookie's Expires is computed from the clock at response time (Max-Age is kept).",
        SET_COOKIE,
        re.compile(
            r"(?i)(expires=)[A-Z][a-z]{2}, \d\d[ -][A-Z][a-z]{2}[ -]\d{4} \d\d:\d\d:\d\d GMT"
        ),
        r"\1<http-date>",
    ),
    Scrub(
        "Django's never_cache sets the Expires header to the current time.",
        frozenset({"expires"}),
        re.compile(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$"),
        "<http-date>",
    ),
    Scrub(
        "Django's CSRF cookie is a fresh random secret for each client.",
        SET_COOKIE,
        re.compile(r"(csrftoken=)[A-Za-z0-9]{32}(?=;)"),
        r"\1<csrf-secret>",
    ),
    Scrub(
        "Django masks the CSRF token in every form with a fresh random pad.",
        frozenset({"body"}),
        re.compile(r'(name="csrfmiddlewaretoken" value=")[A-Za-z0-9]{64}(")'),
        r"\1<csrf-token>\2",
    ),
    Scrub(
        "Django's session key is random.",
        SET_COOKIE,
        re.compile(r"(sessionid=)[a-z0-9]{32}(?=;)"),
        r"\1<session-key>",
    ),
    Scrub(
        "Flask's session cookie is payload.timestamp.signature; the timestamp (and so the "
        "signature) is the signing second. The payload is still compared.",
        SET_COOKIE,
        re.compile(r"(session=\.?[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?=;)"),
        r"\1.<timestamp>.<signature>",
    ),
)

# A body larger than this is compared by length and SHA-256, to keep failure diffs readable.
BODY_DIGEST_OVER = 16 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One server process, in its own process group, listening on ``port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the whole process group: TERM, then KILL if it lingers."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Workers forked by gunicorn share the group; make sure none survive the master.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start(name: str, args: list[str], env: Mapping[str, str], cwd: Path, logs: Path) -> Server:
    port = free_port()
    log = logs / f"{name}.log"
    argv = [arg.replace("{port}", str(port)) for arg in args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
    return Server(name, port, process, log)


def wait_ready(server: Server, path: str) -> None:
    """Poll ``path`` until the server answers at all, or fail with its log."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                client.get(path)
                return
            except httpx.TransportError:
                time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not answer GET {path} on port {server.port} within "
        f"{STARTUP_TIMEOUT:.0f} s; its log ends with:\n{server.log_tail()}"
    )


def gunicorn_args(target: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--worker-class", "sync", "--workers", "1",
        "--bind", "127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "2", target,
    ]  # fmt: skip


def gunicorn_worker_args(target: str) -> list[str]:
    """The one-flag migration: gunicorn's own command line with bridge's worker class."""
    return [
        sys.executable, "-m", "gunicorn", "--worker-class", "bridge.gunicorn.Worker",
        "--workers", "2", "--bind", "127.0.0.1:{port}", "--timeout", "60",
        "--graceful-timeout", "2", target,
    ]  # fmt: skip


# How bridge is run beside gunicorn: uvicorn serving the app's asgi module, or gunicorn
# with bridge's worker serving the very WSGI app string gunicorn serves.
BRIDGE_SERVERS = ("uvicorn", "gunicorn-worker")


def uvicorn_args(target: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
        "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2",
        target,
    ]  # fmt: skip


@dataclass
class ServerPair:
    gunicorn: Server
    bridge: Server

    @property
    def servers(self) -> tuple[Server, Server]:
        return (self.gunicorn, self.bridge)


def serve_pair(
    targets: tuple[str, str],
    env: Mapping[str, str],
    cwd: Path,
    logs: Path,
    ready: str,
    bridge_server: str = "uvicorn",
) -> Iterator[ServerPair]:
    servers: list[Server] = []
    if bridge_server == "gunicorn-worker":
        bridge = gunicorn_worker_args(targets[0])
    else:
        bridge = uvicorn_args(targets[1])
    try:
        servers.append(start("gunicorn", gunicorn_args(targets[0]), env, cwd, logs))
        servers.append(start("bridge", bridge, env, cwd, logs))
        for server in servers:
            wait_ready(server, ready)
        yield ServerPair(servers[0], servers[1])
    finally:
        for server in servers:
            server.stop()


def write_data_files(directory: Path) -> None:
    """Files both servers send; made once, so their mtime (ETag, Last-Modified) is shared."""
    block = hashlib.sha256(b"differential").digest() * 64  # 2 KiB, not compressible to nothing
    (directory / "report.bin").write_bytes(block * 768)  # 1.5 MiB: past bridge's 1 MiB buffer
    (directory / "notes.txt").write_text("Notes in UTF-8: naïve café, 東京.\n" * 100)
    past = time.time() - 86400
    for name in ("report.bin", "notes.txt"):
        os.utime(directory / name, (past, past))


@pytest.fixture(scope="session", params=BRIDGE_SERVERS)
def flask_servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerPair]:
    data = tmp_path_factory.mktemp("flask-data")
    write_data_files(data)
    env = {**FIXED_HASH_SEED, "PYTHONPATH": str(HERE), "DIFFERENTIAL_DATA_DIR": str(data)}
    targets = ("flask_app:app", "flask_app:application")
    yield from serve_pair(targets, env, data, data, "/", request.param)


@pytest.fixture(scope="session", params=BRIDGE_SERVERS)
def django_servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerPair]:
    data = tmp_path_factory.mktemp("django-data")
    write_data_files(data)
    env = {
        **FIXED_HASH_SEED,
        "PYTHONPATH": str(DJANGO_DIR),
        "DJANGO_SETTINGS_MODULE": "djangoproject.settings",
        "DJANGOPROJECT_DATA_DIR": str(data),
        "DJANGO_SUPERUSER_USERNAME": DJANGO_ADMIN_USER,
        "DJANGO_SUPERUSER_PASSWORD": DJANGO_ADMIN_PASSWORD,
        "DJANGO_SUPERUSER_EMAIL": "grace@example.com",
    }
    manage = [sys.executable, str(DJANGO_DIR / "manage.py")]
    for command in (["migrate", "--noinput"], ["createsuperuser", "--noinput"]):
        done = subprocess.run(
            manage + command,
            cwd=DJANGO_DIR,
            env={**os.environ, **env},
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            output = done.stdout.decode() + done.stderr.decode()
            raise RuntimeError(f"manage.py {' '.join(command)} failed:\n{output}")
    targets = ("djangoproject.wsgi:application", "djangoproject.bridge_asgi:application")
    yield from serve_pair(targets, env, DJANGO_DIR, data, "/admin/login/", request.param)


# -- comparing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A response reduced to what must match: version, status, headers, body."""

    http_version: str
    status: int
    headers: dict[str, list[str]]
    body: str | bytes


def digest_body(body: bytes) -> str | bytes:
    if len(body) > BODY_DIGEST_OVER:
        return f"<{len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}>"
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def normalise(response: httpx.Response, port: int, method: str) -> tuple[Seen, int | None]:
    """Reduce ``response``; also return the Content-Length it declared, if any."""
    own = f"127.0.0.1:{port}"
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        if name in SERVER_HEADERS:
            continue
        value = value.replace(own, "127.0.0.1:PORT")
        for scrub in SCRUBS:
            if name in scrub.where:
                value = scrub.pattern.sub(scrub.replacement, value)
        headers.setdefault(name, []).append(value)
    declared = headers.get("content-length")
    body = response.content.replace(own.encode(), b"127.0.0.1:PORT")
    text = digest_body(body)
    if isinstance(text, str):
        for scrub in SCRUBS:
            if "body" in scrub.where:
                text = scrub.pattern.sub(scrub.replacement, text)
    seen = Seen(response.http_version, response.status_code, headers, text)
    return seen, int(declared[0]) if declared and method != "HEAD" else None


@dataclass
class Differ:
    """Sends each request to both servers (a client and cookie jar per server) and compares."""

    pair: ServerPair
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    last: dict[str, httpx.Response] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for server in self.pair.servers:
            self.clients[server.name] = httpx.Client(
                base_url=server.base_url, timeout=REQUEST_TIMEOUT
            )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def send(
        self,
        method: str,
        url: str,
        per_server: Callable[[str, httpx.Response | None], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, httpx.Response]:
        """Send one request to each server, without comparing; ``per_server`` adds kwargs."""
        responses = []
        for server in self.pair.servers:
            extra = per_server(server.name, self.last.get(server.name)) if per_server else {}
            response = self.clients[server.name].request(method, url, **kwargs, **extra)
            self.last[server.name] = response
            responses.append(response)
        return responses[0], responses[1]

    def same(
        self,
        method: str,
        url: str,
        per_server: Callable[[str, httpx.Response | None], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Seen:
        """Send one request to each server and assert the normalised responses are equal."""
        gunicorn, bridge = self.send(method, url, per_server, **kwargs)
        return self.compare(gunicorn, bridge, method)

    def conditional_get(self, url: str, other_etag: str) -> str:
        """The conditional-GET flow on ``url``: 200, then 304 by ETag and by date, then 200
        for an ETag that does not match, then HEAD; returns the ETag."""
        assert self.same("GET", url).status == 200
        etag = self.last["gunicorn"].headers["etag"]
        modified = self.last["gunicorn"].headers["last-modified"]
        assert self.same("GET", url, headers={"if-none-match": etag}).status == 304
        assert self.same("GET", url, headers={"if-modified-since": modified}).status == 304
        assert self.same("GET", url, headers={"if-none-match": other_etag}).status == 200
        self.same("HEAD", url)
        return etag

    def compare(self, gunicorn: httpx.Response, bridge: httpx.Response, method: str) -> Seen:
        expected, expected_length = normalise(gunicorn, self.pair.gunicorn.port, method)
        actual, actual_length = normalise(bridge, self.pair.bridge.port, method)
        if actual_length is not None:
            assert actual_length == len(bridge.content), "bridge's Content-Length is wrong"
            if expected_length is None:
                # The deliberate improvement described in NORMALISATIONS.
                del actual.headers["content-length"]
        assert actual == expected, f"{method} {gunicorn.request.url.raw_path!r} differs"
        return expected


def differ(pair: ServerPair) -> Iterator[Differ]:
    diff = Differ(pair)
    try:
        yield diff
    finally:
        diff.close()


@pytest.fixture
def flask_diff(flask_servers: ServerPair) -> Iterator[Differ]:
    yield from differ(flask_servers)


@pytest.fixture
def django_diff(django_servers: ServerPair) -> Iterator[Differ]:
    yield from differ(django_servers)
