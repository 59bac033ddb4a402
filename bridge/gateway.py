"""The WSGI gateway: one HTTP request served by a WSGI application in a worker thread.

Theory of operation
-------------------

Shape. ``Bridge.__call__`` (bridge.app) dispatches; every HTTP request it serves
itself, legacy or migrated, is one ``RequestCycle`` (bridge.cycle), as uvicorn has
one ``RequestResponseCycle`` per request. The cycle owns the scope, ``receive``,
``send``, the limits, the request's admission slot and its ``Outcome``; this module
runs a WSGI application for it in a thread, and bridge.views runs a view for it.
The response is framed by one state machine with no I/O (``Framing``, bridge.framing),
which the cycle feeds and drains.

Admission. A request that needs a thread (legacy, a sync view, a route inside the
legacy middleware) takes its slot in ``Admission`` (bridge.admission) when it
arrives, before a byte of its body is read, and gives it back when its thread is
done. At most ``max_threads + max_pending`` hold one; the next gets 503 with
``Retry-After`` at once, however late its body arrives.

Who owns which buffer. The event loop owns the connection: only the cycle calls
``receive`` and ``send``. A worker thread owns the WSGI call: only the thread calls
the application, iterates its body and calls ``close()``. They meet in two buffers:

* ``RequestBody`` (bridge.body): written by the cycle, read by the thread. Up to
  ``request_buffer_size`` is received on the loop *before* a thread is taken (nginx
  does the same for gunicorn), so a slow uploader costs a coroutine, not a thread.
  The rest is received by the cycle's listener while the application reads; past
  ``request_buffer_size`` the body spools to an anonymous temporary file, so the
  listener never waits for the reader and memory stays bounded. Async and sync
  views get the whole body received first (the contract), spooled the same way, and
  read it lazily.

* ``Framing`` (bridge.framing): fed by the thread (``start_response``, ``write``,
  each chunk, the end or the error), drained by the loop. The thread changes it
  under the cycle's lock, held for a state change only. A list body, or one that
  reaches its Content-Length, is held in the machine and costs one handoff: the
  loop sends it when ``pool.run`` returns. A generator's first held chunk wakes the
  loop once (``call_soon_threadsafe``) to arm the hold deadline; once the body
  streams, a chunk wakes the loop only if the sender is idle.

The framing rule (bridge.framing has the table): after ``start_response`` the body
is held until it ends (sent whole, with a Content-Length), or more than
``response_buffer_size`` is held, or ``hold_time`` (0.1 s, on an injected clock)
has passed since its first byte; then the headers go out and the rest streams.
HTTP/1.0 responses without a Content-Length are held to the end (up to the buffer).
So the same application gives the same framing every time, whatever the thread
scheduling: a body produced without blocking is always sent whole, and an error
before the rule fires is always a clean 500.

Who may block. The thread: on ``wsgi.input`` reads past what has arrived, when
more than ``response_buffer_size`` waits for the client (backpressure: a slow
reader holds a thread only for responses larger than that), and in application
code. The loop: never; it awaits ``receive``, ``send`` and futures the thread
resolves with ``call_soon_threadsafe``. The worker records the server's loop in
asgiref's thread-local, so ``async_to_sync`` in legacy code runs on the server's
own loop (bridge.threads).

Disconnects. The cycle is the only reader of ``receive``, and whenever the body is
still arriving or the response streams, its listener task is reading it, so
``http.disconnect`` is always seen (uvicorn, hypercorn, daphne and granian send it
and return silently from ``send`` afterwards; a ``send`` that raises ``OSError``
counts too). It marks both sides: the next ``wsgi.input`` read past the received
bytes raises ``ClientDisconnected``, and the next body chunk raises it too, so
iteration stops within one chunk and ``close()`` runs in the thread. A request the
server cancels is treated the same way.

Deadlines. ``body_timeout`` (60 s, nginx's ``client_body_timeout``) bounds each wait
for the next body chunk: past it, before the application runs, the client gets
408; while it runs, its read raises ``BodyTimeout`` and the client gets 408 if no
response has started. ``hold_time`` bounds how long a response is held. A body past
``max_body_size`` gets 413 the same way, whatever the application does with the
``BodyTooLarge`` its read raises: the refusal is decided before the read fails.

Errors. Until the headers go out, an exception (or a body shorter than its
Content-Length) becomes a clean 500 with no detail, and ``start_response(...,
exc_info)`` may still replace the headers. After, the queued bytes go out and no
final ``http.response.body`` follows, so the server cuts the connection and the
client sees a truncated response (raising instead would do the same, but daphne
4.2 then loses its application checker for the rest of the process).

Defaults and their precedent: ``request_buffer_size`` 1 MiB (nginx buffers request
bodies before the upstream sees them; its client_body_buffer_size spools past it),
``response_buffer_size`` 1 MiB (nginx's proxy_buffers hold a response so the upstream
is free), ``body_timeout`` 60 s (nginx), ``hold_time`` 0.1 s (the limit below which a
delay is not perceived), ``max_threads`` 32 and ``max_pending`` 2048 (bridge.threads:
Python's executor cap and gunicorn's backlog).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ._types import Environ, RawHeaders, Send, WSGIApp
from .admission import Admission
from .cycle import Outcome, RequestCycle
from .filewrapper import FileWrapper
from .framing import CLOSE, plain_response
from .threads import ThreadPool

__all__ = ["call_app", "iterate", "refuse", "run_wsgi", "serve_wsgi"]


def call_app(app: WSGIApp, environ: Environ, cycle: RequestCycle, extensions: Any) -> None:
    """Call the application and drive its iterable; runs in a pool thread.

    PEP 3333: "If the iterable returned by the application has a close() method, the
    server or gateway must call that method upon completion of the current request,
    whether the request was completed normally, or terminated early due to an
    application error during iteration or an early disconnect of the browser."
    """
    error: BaseException | None = None
    try:
        iterable: Iterable[bytes] = app(environ, cycle.start_response)
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
    if type(iterable) is FileWrapper and "http.response.pathsend" in extensions:
        found = iterable.pathsend_target(cycle.framing.status, cycle.framing.content_length)
        if found is not None and cycle.send_path(*found):
            return
    # A list or tuple is already whole in memory: holding it costs nothing and
    # turns the response into a single handoff however many items it has.
    whole = type(iterable) in (list, tuple)
    push = cycle.push
    for chunk in iterable:
        if push(chunk, whole):
            return


async def run_wsgi(
    cycle: RequestCycle, pool: ThreadPool, app: WSGIApp, environ: Environ
) -> Outcome:
    """Run ``app`` in a thread for an environ whose body has started; send its response."""
    extensions = cycle.scope.get("extensions") or {}
    try:
        await pool.run(call_app, app, environ, cycle, extensions)
    except asyncio.CancelledError:
        # The server gave up on this request: stop the thread at its next chunk.
        cycle.cancelled()
        raise
    cycle.release()  # the thread is free: the slot may go to the next request
    return await cycle.finish()


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


async def refuse(send: Send, status: int, retry_after: int = 1) -> None:
    """Answer with bridge's own refusal (413, 431, 503) and close the connection, for
    code that serves outside a request cycle (the limits of mounted apps)."""
    extra: RawHeaders = [CLOSE]
    if status == 503:
        extra.append((b"retry-after", str(retry_after).encode("ascii")))
    for message in plain_response(status, extra):
        await send(message)
