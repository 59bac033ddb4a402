"""Where bridge's log lines go when it runs a server, and one traceback per failure.

bridge logs through the ``bridge`` logger. Under ``bridge serve`` on uvicorn its lines
go to uvicorn's error handler, in uvicorn's format and at ``--log-level``; under the
gunicorn worker, to gunicorn's error log (``serve/worker.py``).

A legacy response that fails after its headers went out is cut: bridge logs the
traceback and returns without the final body message, so that the client sees the
truncation. uvicorn then logs "ASGI callable returned without completing response."
for the same request: a second line for one failure. A filter drops it when bridge
has logged the failure for the same request: bridge's uvicorn protocols
(``serve/draining.py``) serve the app through ``marked()``, which puts a ``_Request``
in each request task's context as its first step (uvicorn may start that task from an
empty context, ``observe/hygiene.py``). The worker thread's copy of the context shares
the object, so the thread that logs the failure marks the very object uvicorn's task
reads when the app returns.
"""

from __future__ import annotations

import copy
import logging
from contextvars import ContextVar
from typing import Any

from .._types import ASGIApp, Receive, Scope, Send

# uvicorn's line for an app that returned mid-response (uvicorn/protocols/http/*_impl.py).
INCOMPLETE = "ASGI callable returned without completing response."
# The words of bridge's own line for the same event (wsgi/cycle.py, State.CUT).
CUT = "the response was cut"


class _Request:
    """What the log said about one request: whether bridge logged its response as cut."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


_request: ContextVar[_Request | None] = ContextVar("bridge_request_log", default=None)


class _Filter(logging.Filter):
    """On ``bridge``: notes a cut response; on ``uvicorn.error``: drops uvicorn's echo of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _request.get()
        if request is None:
            return True
        if record.name == "bridge":
            if CUT in str(record.msg):
                request.cut = True
            return True
        return not (record.msg == INCOMPLETE and request.cut)


_FILTER = _Filter()


def one_traceback() -> None:
    """Install the filter on ``bridge`` and ``uvicorn.error`` in this process (idempotent)."""
    for name in ("bridge", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _Marked:
    """The served app, with each request task given its own ``_Request`` first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _request.set(_Request())
        await self.app(scope, receive, send)


_marked: dict[int, tuple[ASGIApp, _Marked]] = {}


def marked(app: ASGIApp) -> ASGIApp:
    """``app`` behind its ``_Marked`` wrapper, made once per app (protocols ask per connection)."""
    found = _marked.get(id(app))
    if found is None or found[0] is not app:
        found = _marked[id(app)] = (app, _Marked(app))
    return found[1]


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging configuration, with the ``bridge`` logger on its error handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["bridge"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
