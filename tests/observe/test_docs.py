"""docs/observability.md's setups run as pasted: each file is saved, each command in the
console block after it runs (on a free port, and with Sentry's DSN pointed at a
collector on loopback), the output is what the page says, and so is what the tracer
recorded. The ``pip install`` lines are what this environment already has."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..servers import ROOT, free_port, running

DOC = ROOT / "docs" / "observability.md"

pytestmark = pytest.mark.live


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.DOTALL)


def setup(name: str) -> tuple[str, str, str | None]:
    """The file ``name``, the console block after it, and the text block after that."""
    found = blocks()
    for index, (language, code) in enumerate(found):
        if language == "python" and code.startswith(f"# {name}\n"):
            console = found[index + 1]
            assert console[0] == "console"
            after = found[index + 2] if index + 2 < len(found) else ("", "")
            return code, console[1], after[1] if after[0] == "text" else None
    raise AssertionError(f"docs/observability.md has no file {name}")


def run_console(
    console: str, directory: Path, env: dict[str, str], log: Path
) -> Iterator[tuple[str, str, str]]:
    """Start the server the block starts; yield (command, expected, actual) per curl."""
    lines = console.splitlines()
    commands = [(i, line[2:]) for i, line in enumerate(lines) if line.startswith("$ ")]
    port = free_port()
    serve = next(c for _, c in commands if "bridge serve" in c)
    words = shlex.split(serve)
    start = words.index("bridge")
    args = [*words[start:], "--port", str(port), "--app-dir", str(directory)]
    with running(args, port, env=env, log=log):
        for position, (index, command) in enumerate(commands):
            if not command.startswith("curl "):
                continue
            end = commands[position + 1][0] if position + 1 < len(commands) else len(lines)
            expected = "\n".join(lines[index + 1 : end])
            pasted = command.replace("localhost:8000", f"127.0.0.1:{port}")
            actual = subprocess.run(
                pasted, shell=True, capture_output=True, text=True, timeout=30, check=True
            ).stdout.rstrip("\n")
            yield command, expected, actual


def run_otel_setup(name: str, tmp_path: Path) -> str:
    """Write the docs' ``name``, run its console as pasted, check the lines the docs say
    the server prints, and return the server's whole output."""
    code, console, shows = setup(name)
    (tmp_path / name).write_text(code)
    log = tmp_path / "server.log"
    for command, expected, actual in run_console(console, tmp_path, {}, log):
        assert actual == expected, command
    output = log.read_text()
    assert shows is not None
    for line in shows.strip().splitlines():
        assert line.strip() in output, line
    return output


def test_the_opentelemetry_setup(tmp_path: Path) -> None:
    # Stopped with SIGTERM: the providers flushed on lifespan shutdown.
    output = run_otel_setup("otel_app.py", tmp_path)
    spans = [
        json.loads(chunk)
        for chunk in re.findall(r"^\{\n.*?^\}$", output, re.DOTALL | re.MULTILINE)
        if '"kind": "SpanKind.' in chunk
    ]
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert [s["name"] for s in servers] == [
        "GET /items/<int:item_id>",
        "GET /orders/<int:order_id>",
    ]
    # Two requests, two traces; Flask's span is in the legacy one.
    assert len({s["context"]["trace_id"] for s in spans}) == 2


def test_the_django_opentelemetry_setup(tmp_path: Path) -> None:
    run_otel_setup("django_otel_app.py", tmp_path)


class Collector(BaseHTTPRequestHandler):
    """Sentry's ingest endpoint on loopback: keeps the items of every envelope."""

    items: ClassVar[list[tuple[str, dict[str, Any]]]] = []  # each server's subclass has its own

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        for index in range(1, len(lines) - 1):
            try:
                header = json.loads(lines[index])
            except ValueError:
                continue
            if isinstance(header, dict) and header.get("type") in ("event", "transaction"):
                self.items.append((header["type"], json.loads(lines[index + 1])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    items: list[tuple[str, dict[str, Any]]] = []
    handler = type("Handler", (Collector,), {"items": items})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://public@127.0.0.1:{server.server_address[1]}/1", items
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_sentry_setup(
    tmp_path: Path, collector: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    dsn, items = collector
    code, console, _ = setup("sentry_app.py")
    (tmp_path / "sentry_app.py").write_text(code)
    env = {"SENTRY_DSN": dsn}
    for command, expected, actual in run_console(console, tmp_path, env, tmp_path / "log"):
        assert actual == expected, command
    transactions = [event for kind, event in items if kind == "transaction"]
    errors = [event for kind, event in items if kind == "event"]
    assert [(t["transaction"], t["transaction_info"]["source"]) for t in transactions] == [
        ("/items/<int:item_id>", "route"),
        ("/fail/<int:n>", "route"),
        ("/orders/<int:order_id>", "route"),
    ]
    assert [e["exception"]["values"][-1]["value"] for e in errors] == [
        "legacy view 1 failed",
        "order 2 failed",
    ]
    assert [(e["request"]["url"].rsplit("/", 2)[-2:], e["request"]["method"]) for e in errors] == [
        (["fail", "1"], "GET"),
        (["orders", "2"], "GET"),
    ]
    for error in errors:  # curl's User-Agent header, as every header of the request
        assert "user-agent" in {name.lower() for name in error["request"]["headers"]}
    traces = {t["transaction"]: t["contexts"]["trace"]["trace_id"] for t in transactions}
    assert [e["contexts"]["trace"]["trace_id"] for e in errors] == [
        traces["/fail/<int:n>"],
        traces["/orders/<int:order_id>"],
    ]
