"""``bridge replay FILE APP``: a shadow mismatch downloaded from the dashboard, run again.

The file is what the dashboard kept of one request (its method, path, query names,
the values of a few request headers, and its body only where the route showed
bodies). The request is rebuilt from it and answered in this process by the legacy
app and by the route's view, then compared as the shadow run compared them, and the
comparison printed. Exit status 0 when they now match, 1 when they still differ, so
a fixed mismatch can stay a regression test: ``replay_mismatch`` does the same in a
test and raises ``AssertionError`` with the comparison while they differ.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .._types import Message, Scope
from ..shadow.compare import truncate

if TYPE_CHECKING:
    from ..app import Bridge
    from ..shadow.runner import Replayed

EXIT_DIFFERS = 1
# The kind of file the dashboard's download is; a later format raises the version.
FORMAT = "shadow mismatch"
VERSION = 1


_CUT = re.compile(rb"\.\.\. \(\d+ bytes\)\Z")  # what a kept body ends with when cut


class ReplayError(Exception):
    """A file that is not a replayable report, or an app with no route for it."""


def load_report(path: str | Path) -> dict[str, Any]:
    """The report in ``path``, checked: a sentence naming the fix for anything else."""
    try:
        report = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ReplayError(f'The file "{path}" could not be read ({exc.strerror}).') from None
    except ValueError:
        raise ReplayError(
            f'The file "{path}" is not JSON; download a mismatch from the dashboard\'s '
            '"download to replay" link.'
        ) from None
    if not isinstance(report, dict) or report.get("bridge") != FORMAT:
        raise ReplayError(
            f'The file "{path}" is not a shadow mismatch report; download one from the '
            'dashboard\'s "download to replay" link.'
        )
    if report.get("version") != VERSION:
        raise ReplayError(
            f'The report "{path}" has format version {report.get("version")!r}; this bridge '
            f"reads version {VERSION}. Replay it with the bridge version that served it."
        )
    return report


def request_of(report: dict[str, Any]) -> tuple[Scope, bytes, list[str]]:
    """The ASGI scope and body the report describes, and what could not be kept of it."""
    request = report["request"]
    notes: list[str] = []
    query = [(name, value or "") for name, value in request["query"]]
    if any(value is None for _, value in request["query"]):
        notes.append("query values were not kept (Shadow(show_query=True) keeps them)")
    body = (request["body"] or "").encode("utf-8")
    if request["body_bytes"] and request["body"] is None:
        notes.append(
            f"the request body ({request['body_bytes']} bytes) was not kept "
            "(Shadow(show_bodies=True) keeps it)"
        )
    elif len(body) != request["body_bytes"]:
        body = _CUT.sub(b"", body)
        notes.append(f"the request body was cut: {len(body)} of {request['body_bytes']} bytes")
    if request["other_headers"]:
        notes.append("headers sent without their values: " + ", ".join(request["other_headers"]))
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request["headers"]]
    if body and not any(k == b"content-length" for k, _ in headers):
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    path: str = request["path"]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "query_string": urlencode(query).encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    return scope, body, notes


async def replay(bridge: Bridge, report: dict[str, Any]) -> Replayed:
    """Answer the report's request with the legacy app and the view, inside the app's
    lifespan (its startup and shutdown hooks run), and compare."""
    scope, body, _ = request_of(report)
    async with _lifespan(bridge):
        headers = tuple(report.get("compared_headers") or ("content-type",))
        noise = tuple(report.get("noise") or ())
        replayed = await bridge.replay(scope, body, headers, noise)
    if replayed is None:
        raise ReplayError(
            f"No route of the app matches {scope['method']} {scope['path']} (the report is from "
            f'"{report.get("route")}"); register it with app.route() again to replay it.'
        )
    return replayed


def describe(report: dict[str, Any], replayed: Replayed) -> str:
    """The comparison, as ``bridge replay`` prints it."""
    _, _, notes = request_of(report)
    target = report["request"]["target"]
    lines = [f"replayed {report['request']['method']} {target} on {replayed.rule}"]
    lines += [f"  note: {note}" for note in notes]
    lines.append(f"legacy: {replayed.legacy.status}, view: {replayed.shadow.status}")
    if replayed.problem is not None:
        lines.append(replayed.problem)
    elif not replayed.differences:
        lines.append("The view now answers as the legacy app does.")
    else:
        count = len(replayed.differences)
        lines.append(f"{count} {'difference' if count == 1 else 'differences'}:")
        for d in replayed.differences:
            lines.append(f"  {d.where}")
            lines.append(f"    legacy: {truncate(d.legacy)}")
            lines.append(f"    view:   {truncate(d.shadow)}")
    kept = report.get("differences") or []
    if kept:
        lines.append(f"when it was kept ({report.get('count', 1)} like it):")
        lines += [f"  {d['where']}: {d['legacy']} | {d['shadow']}" for d in kept]
    elif report.get("error"):
        lines.append(f"when it was kept: {report['error']}")
    return "\n".join(lines)


def replay_mismatch(bridge: Bridge, path: str | Path) -> Replayed:
    """For a test: replay the downloaded report at ``path`` against ``bridge`` and raise
    ``AssertionError`` with the comparison while the view and the legacy app differ."""
    report = load_report(path)
    replayed = asyncio.run(replay(bridge, report))
    if not replayed.matches:
        raise AssertionError(describe(report, replayed))
    return replayed


def command(path: str, app: str, app_dir: str = ".") -> int:
    """``bridge replay FILE APP``: print the comparison; 0 if they match now, else 1."""
    from .importer import load_app

    report = load_report(path)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    bridge = load_app(app).bridge
    if bridge is None:
        raise ReplayError(
            f'"{app}" is an ASGI app with no Bridge inside; name the Bridge that registers '
            f'the route "{report.get("route")}".'
        )
    replayed = asyncio.run(replay(bridge, report))
    print(describe(report, replayed))
    return 0 if replayed.matches else EXIT_DIFFERS


class _lifespan:
    """The ASGI lifespan of ``bridge`` around a block: startup before, shutdown after."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(self.bridge(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.outbox.get()
        if answer["type"] != "lifespan.startup.complete":
            raise ReplayError(f"The app did not start: {answer.get('message', answer['type'])}")

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task
