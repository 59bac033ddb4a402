"""bridge's own pages: the Prometheus text at ``metrics_path``, the dashboard at ``dashboard_path``.

Both are off until a path is given, and are answered before routing, so they never
reach the legacy app. The dashboard (one self-contained HTML page and the JSON it
polls) shows request counts, route names and latencies, and the metrics the same;
who may read either is decided by one policy, ``access.AccessPolicy``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .._types import Receive, Scope, Send
from ..metrics.registry import Metrics
from .access import AccessPolicy

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
# A kept shadow report by route index and kind id (``Shadows.report``), or None.
Reports = Callable[[int, str], "dict[str, Any] | None"]

# The largest body of a control POST: a rule, an action and a share fit in far less.
MAX_ACTION_BODY = 4096


class Controls(Protocol):
    """What the dashboard may change: the canary routes (``bridge.canary.runner.Canaries``)."""

    def act(self, rule: str, action: str, share: object) -> dict[str, Any]: ...


_NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
# The page loads nothing from elsewhere: inline script and style, JSON from itself.
_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


class Endpoints:
    """The paths bridge answers itself, each mapped to its handler."""

    def __init__(
        self,
        metrics: Metrics,
        access: AccessPolicy,
        controls: Controls | None = None,
        reports: Reports | None = None,
    ) -> None:
        self.metrics = metrics
        self.access = access
        self.controls = controls
        self.reports = reports
        self.paths: dict[str, Handler] = {}
        self.actions: dict[str, Handler] = {}  # the paths that take a POST
        self.data_path = ""
        self.base = ""

    @classmethod
    def configure(
        cls,
        metrics: Metrics | None,
        metrics_path: str | None,
        dashboard_path: str | None,
        access: AccessPolicy,
        controls: Controls | None = None,
        reports: Reports | None = None,
    ) -> Endpoints | None:
        """The endpoints for these options, or None when neither path is set; ``reports``
        serves the shadow routes' kept mismatches as downloads under the dashboard."""
        if metrics_path is None and dashboard_path is None:
            return None
        if metrics is None:
            raise ValueError(
                "metrics_path and dashboard_path need the counters: drop metrics=False, "
                "or drop the paths."
            )
        endpoints = cls(metrics, access, controls, reports)
        if metrics_path is not None:
            _check_path("metrics_path", metrics_path)
            endpoints.paths[metrics_path] = endpoints.prometheus
        if dashboard_path is not None:
            _check_path("dashboard_path", dashboard_path)
            base = dashboard_path.rstrip("/")
            if not base:
                raise ValueError(
                    'dashboard_path "/" would hide the legacy app\'s home page; '
                    'use a path of its own, such as "/_bridge/".'
                )
            endpoints.paths[base] = endpoints.page
            endpoints.paths[base + "/"] = endpoints.page
            endpoints.base = base
            endpoints.data_path = base + "/data.json"
            endpoints.paths[endpoints.data_path] = endpoints.data
            if controls is not None:
                endpoints.actions[base + "/canary"] = endpoints.canary
        return endpoints

    async def answer(self, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``scope`` if ``path`` (its ``RequestPath.route``) is one of bridge's own
        pages; True if it did."""
        handler = self.paths.get(path)
        if handler is None:
            action = self.actions.get(path)
            if action is not None:
                if scope["method"] != "POST":
                    await _send(send, scope, 405, b"text/plain; charset=utf-8", b"Use POST.\n",
                                [(b"allow", b"POST")])  # fmt: skip
                else:
                    await action(scope, receive, send)
                return True
            if not (self.base and path.startswith(self.base + "/shadow/")):
                return False
            handler = functools.partial(self.report, path[len(self.base) :])
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, scope, 405, b"text/plain; charset=utf-8", b"Use GET.\n",
                        [(b"allow", b"GET, HEAD")])  # fmt: skip
        else:
            await handler(scope, receive, send)
        return True

    # -- the handlers -----------------------------------------------------------------

    async def prometheus(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self.access.metrics(scope)
        if not verdict.allowed:
            await _forbidden(send, scope, verdict.reason)
            return
        await self.metrics.refresh()
        body = self.metrics.prometheus().encode("utf-8")
        await _send(send, scope, 200, b"text/plain; version=0.0.4; charset=utf-8", body)

    async def page(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = scope.get("root_path", "").rstrip("/")
        verdict = self.access.dashboard(scope, exchange=root + self.base)
        if not verdict.allowed:
            await _forbidden(send, scope, verdict.reason)
            return
        if verdict.redirect is not None and verdict.cookie is not None:
            # The Jupyter pattern: the token leaves the URL (history, logs, Referer)
            # at once; from here on the HttpOnly cookie proves it.
            headers = [(b"location", verdict.redirect.encode("latin-1")),
                       (b"set-cookie", verdict.cookie.encode("latin-1"))]  # fmt: skip
            await _send(send, scope, 303, b"text/plain; charset=utf-8", b"See the page.\n", headers)
            return
        # json.dumps makes a JS string; "<" escaped so no "</script>" can end the block.
        url = json.dumps(root + self.data_path).replace("<", "\\u003c")
        body = _page().replace("__DATA_URL__", url).encode("utf-8")
        extra = [(b"content-security-policy", _CSP), (b"referrer-policy", b"no-referrer")]
        await _send(send, scope, 200, b"text/html; charset=utf-8", body, extra)

    async def data(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self.access.dashboard(scope)
        if not verdict.allowed:
            await _forbidden(send, scope, verdict.reason)
            return
        await self.metrics.refresh()
        snapshot = self.metrics.snapshot()
        if self.controls is not None:
            csrf = self.access.csrf(scope)
            # The page shows the controls to a holder of the token only (its cookie).
            snapshot["controls"] = {"allowed": csrf is not None, "csrf": csrf}
        body = json.dumps(snapshot).encode("utf-8")
        await _send(send, scope, 200, b"application/json", body)

    async def canary(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A change to a canary route: JSON ``{"rule", "action", "share"}``, from a token holder."""
        verdict = self.access.control(scope)
        if not verdict.allowed:
            await _forbidden(send, scope, verdict.reason)
            return
        assert self.controls is not None
        body = await _read_body(receive, MAX_ACTION_BODY)
        if body is None:
            await _plain(send, scope, 413, "A canary change is a little JSON; this body is larger.")
            return
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("rule"), str)
            and isinstance(data.get("action"), str)
        ):
            example = '{"rule": "/items/<int:item_id>", "action": "set", "share": 0.2}'
            await _plain(send, scope, 400, f"Send JSON such as {example}; got {body[:200]!r}.")
            return
        try:
            result = self.controls.act(data["rule"], data["action"], data.get("share"))
        except (LookupError, ValueError) as exc:
            await _plain(send, scope, 400, str(exc))
            return
        await _send(send, scope, 200, b"application/json", json.dumps(result).encode("utf-8"))

    async def report(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """A kept shadow mismatch as a file for ``bridge replay``: ``name`` is
        ``/shadow/<route>/<id>.json`` below the dashboard."""
        verdict = self.access.dashboard(scope)
        if not verdict.allowed:
            await _forbidden(send, scope, verdict.reason)
            return
        found = _REPORT.fullmatch(name)
        reports = self.reports
        report = None if found is None or reports is None else reports(int(found[1]), found[2])
        if found is None or report is None:
            body = b"No kept shadow report here: it may have been replaced by a later one.\n"
            await _send(send, scope, 404, b"text/plain; charset=utf-8", body)
            return
        saved = f'attachment; filename="mismatch-{found[2]}.json"'.encode()
        body = json.dumps(report, indent=1).encode("utf-8")
        await _send(send, scope, 200, b"application/json", body,
                    [(b"content-disposition", saved)])  # fmt: skip


_REPORT = re.compile(r"/shadow/(\d{1,4})/([0-9a-f]{12})\.json")


def _check_path(option: str, path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f'{option} "{path}" must start with "/", such as "/_bridge/".')


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (nothing more is kept)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client left; what came is all there is
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            return None
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _plain(send: Send, scope: Scope, status: int, text: str) -> None:
    await _send(send, scope, status, b"text/plain; charset=utf-8", (text + "\n").encode("utf-8"))


async def _forbidden(send: Send, scope: Scope, reason: str) -> None:
    body = (reason + "\n").encode("utf-8")
    await _send(send, scope, 403, b"text/plain; charset=utf-8", body)


async def _send(
    send: Send,
    scope: Scope,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *_NO_STORE,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


@functools.cache
def _page() -> str:
    """The dashboard's HTML, package data beside this module, read once."""
    return (importlib.resources.files(__package__) / "dashboard.html").read_text("utf-8")
