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
from collections.abc import Awaitable, Callable

from .._types import Receive, Scope, Send
from ..metrics.registry import Metrics
from .access import AccessPolicy

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
# The page loads nothing from elsewhere: inline script and style, JSON from itself.
_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


class Endpoints:
    """The paths bridge answers itself, each mapped to its handler."""

    def __init__(self, metrics: Metrics, access: AccessPolicy) -> None:
        self.metrics = metrics
        self.access = access
        self.paths: dict[str, Handler] = {}
        self.data_path = ""
        self.base = ""

    @classmethod
    def configure(
        cls,
        metrics: Metrics | None,
        metrics_path: str | None,
        dashboard_path: str | None,
        access: AccessPolicy,
    ) -> Endpoints | None:
        """The endpoints for these options, or None when neither path is set."""
        if metrics_path is None and dashboard_path is None:
            return None
        if metrics is None:
            raise ValueError(
                "metrics_path and dashboard_path need the counters: drop metrics=False, "
                "or drop the paths."
            )
        endpoints = cls(metrics, access)
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
        return endpoints

    async def answer(self, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``scope`` if ``path`` (its ``RequestPath.route``) is one of bridge's own
        pages; True if it did."""
        handler = self.paths.get(path)
        if handler is None:
            return False
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
        body = json.dumps(self.metrics.snapshot()).encode("utf-8")
        await _send(send, scope, 200, b"application/json", body)


def _check_path(option: str, path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f'{option} "{path}" must start with "/", such as "/_bridge/".')


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
