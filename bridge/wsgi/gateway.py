"""The WSGI gateway: one HTTP request served by a WSGI application in a worker thread.

The theory of operation (admission, buffers, the framing rule, disconnects, deadlines,
errors) is in this folder's ``__init__.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from typing import Any

from .._types import Environ, WSGIApp
from ..threads.admission import Admission
from ..threads.pool import ThreadPool
from .cycle import Outcome, RequestCycle
from .filewrapper import FileWrapper

__all__ = ["call_app", "iterate", "run_wsgi", "serve_wsgi"]


def call_app(app: WSGIApp, environ: Environ, cycle: RequestCycle, extensions: Any) -> None:
    """Call the application and drive its iterable; runs in a pool thread.

    PEP 3333: "If the iterable returned by the application has a close() method, the
    server or gateway must call that method upon completion of the current request,
    whether the request was completed normally, or terminated early due to an
    application error during iteration or an early disconnect of the browser."
    """
    error: BaseException | None = None
    cycle.reading()  # a body left unread while the request waited: receive the rest now
    try:
        iterable: Iterable[bytes] = app(environ, cycle.sender.start_response)
        try:
            iterate(cycle, iterable, extensions)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
    except BaseException as exc:
        error = exc
    cycle.app_done(error)


def iterate(cycle: RequestCycle, iterable: Iterable[bytes], extensions: Any) -> None:
    """Drive the application's iterable in the thread, stopping when no more is wanted."""
    sender = cycle.sender
    if (
        type(iterable) is FileWrapper
        and "http.response.pathsend" in extensions
        and sender.send_path(iterable)
    ):
        return
    # A list or tuple is already whole in memory: holding it costs nothing and
    # turns the response into a single handoff however many items it has.
    whole = type(iterable) in (list, tuple)
    push = sender.push
    for chunk in iterable:
        if push(chunk, whole):
            return


async def run_wsgi(
    cycle: RequestCycle,
    pool: ThreadPool,
    app: WSGIApp,
    environ: Environ,
    context: contextvars.Context | None = None,
) -> Outcome:
    """Run ``app`` in a thread for an environ whose body has started; send its response.

    ``context``: the context to run it in (a sync view's own, so its response iterates
    where the view ran); by default a copy of the caller's.
    """
    extensions = cycle.scope.get("extensions") or {}
    try:
        loop, waits = cycle.loop, cycle.outcome
        if context is None:
            await pool.run(call_app, app, environ, cycle, extensions, loop=loop, waits=waits)
        else:
            await pool.run(
                context.run, call_app, app, environ, cycle, extensions, loop=loop, waits=waits
            )
    except asyncio.CancelledError:
        # The server gave up on this request: stop the thread at its next chunk.
        cycle.cancelled()
        raise
    cycle.release()  # the thread is free: the slot may go to the next request
    await cycle.sender.finish()  # what RequestCycle.finish does, a frame fewer per request
    return cycle.close()


async def serve_wsgi(
    cycle: RequestCycle,
    app: WSGIApp,
    pool: ThreadPool,
    admission: Admission,
    extra: Environ | None = None,
) -> Outcome:
    """Answer one HTTP request with a WSGI application (the legacy one, most often).

    ``extra`` is added to the environ: the path values of a route served in the
    legacy middleware.
    """
    try:
        environ = await cycle.open(admission, whole=False)
        if environ is None:
            return cycle.close()
        if extra:
            environ.update(extra)
        return await run_wsgi(cycle, pool, app, environ)
    finally:
        cycle.release()
