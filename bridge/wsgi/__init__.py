"""One WSGI request: the environ, the request body, the WSGI call in a thread, the framing.

- ``environ.py``: the scope as a PEP 3333 environ, and the request path every layer matches.
- ``headers.py``: response status and headers checked and encoded.
- ``body.py``: ``RequestBody``, the bounded, spooled ``wsgi.input``.
- ``framing.py``: ``Framing``, the response as a state machine with no I/O.
- ``cycle.py``: ``RequestCycle``, one object per request: admission, environ, body, outcome.
- ``sender.py``: ``Sender``, the response side: the framing machine, its lock, the sender.
- ``gateway.py``: the WSGI application run in a worker thread for a cycle.
- ``filewrapper.py``: ``wsgi.file_wrapper`` and ``http.response.pathsend``.
- ``multiprocess.py``: PEP 3333's ``wsgi.multiprocess`` flag, from the worker count.

Theory of operation
-------------------

Shape. ``Bridge.__call__`` (``app.py``) dispatches, from the request's path derived
once (``locate`` in ``environ.py``: the route form and ``SCRIPT_NAME``/``PATH_INFO``)
and handed on to the pages, the routes, the metrics and the environ. Every HTTP
request it serves itself, legacy or migrated, is one ``RequestCycle`` (``cycle.py``),
as uvicorn has one ``RequestResponseCycle`` per request. The cycle owns the scope,
``receive``, the limits, the request's admission slot, its body and its ``Outcome``;
``gateway.py`` runs a WSGI application for it in a thread, and ``views.py`` runs a
view for it.
The response is framed by one state machine with no I/O (``Framing``, ``framing.py``),
held in the cycle's ``Sender`` (``sender.py``) with the one lock that guards it, every
flag that lock guards, the wake-ups and the task that calls ``send``: the only state
both the thread and the loop touch, changed only through the sender's methods
(uvicorn's ``FlowControl`` is the precedent).

Admission. Slots are taken for what holds a thread. A body still arriving holds a
share of the ``Intake`` (``threads/admission.py``): a connection of ``max_uploads``
and the bytes it declares, up to ``request_buffer_size``, of ``max_upload_memory``.
Once its buffered part is in (all of it for a view), a request that needs a thread
(legacy, a sync view, a route inside the legacy middleware) takes its slot in
``Admission`` and gives it back when its thread is done. At most ``max_threads +
max_pending`` hold one. Either budget, full, answers 503 with ``Retry-After`` and a
sentence naming it, so 2,000 slow uploads cost coroutines, never the slots a GET
needs.

Who owns which buffer. The event loop owns the connection: only the cycle calls
``receive`` and only its sender calls ``send``. A worker thread owns the WSGI call:
only the thread calls the application, iterates its body and calls ``close()``. They
meet in two buffers:

* ``RequestBody`` (``body.py``): written by the cycle, read by the thread. Up to
  ``request_buffer_size`` is received on the loop *before* a thread is taken (nginx
  does the same for gunicorn), so a slow uploader costs a coroutine, not a thread.
  The rest is received by the cycle's listener once the request's thread starts
  (``RequestCycle.reading``): a request queued for a thread reads nothing more, so the
  server's flow control holds the client back rather than bridge spooling bodies
  nobody reads yet. Past ``request_buffer_size`` the body spools to an anonymous
  temporary file, so the listener never waits for the reader and memory stays
  bounded. Async and sync views get the whole body received first (the contract),
  spooled the same way, and read it lazily.

* ``Framing`` (``framing.py``): fed by the thread (``start_response``, ``write``,
  each chunk, the end or the error), drained by the loop. Both change it through
  the ``Sender`` only, under its lock, held for a state change only. A list body, or one that
  reaches its Content-Length, is held in the machine and costs one handoff: the
  loop sends it when ``pool.run`` returns. A streamed body's chunk wakes the loop
  (``call_soon_threadsafe``) only if the sender is idle; while it sends, the chunks
  queue behind it.

The framing rule (``framing.py`` has it whole) follows from what the application
returned, never from a clock: a body whole in memory (a list or tuple, or a chunk
that reaches the declared Content-Length) goes out whole, with its length; any other
iterable streams from its first non-empty chunk, as under gunicorn, a2wsgi and
granian; HTTP/1.0 responses without a Content-Length are held to the end (up to the
buffer). So the same application gives the same messages every time, whatever the
thread scheduling, and nothing on the hot path waits on a timer. The headers go out
with the first body byte, so an error before it is always a clean 500 and
``start_response(..., exc_info)`` may replace them until then.

Who may block. The thread: on ``wsgi.input`` reads past what has arrived, when
more than ``response_buffer_size`` waits for the client (backpressure: a slow
reader holds a thread only for responses larger than that), and in application
code. The loop: never; it awaits ``receive``, ``send`` and futures the threads
resolve in batches (one ``call_soon_threadsafe`` wakes the loop for every result
that arrives before it runs). The worker records the server's loop in
asgiref's thread-local, so ``async_to_sync`` in legacy code runs on the server's
own loop (``threads/pool.py``).

Disconnects. The cycle is the only reader of ``receive``, and whenever the body is
still arriving or the response streams, its listener task is reading it, so
``http.disconnect`` is always seen (uvicorn, hypercorn, daphne and granian send it
and return silently from ``send`` afterwards; a ``send`` that raises ``OSError``
counts too). It marks both sides: the next ``wsgi.input`` read past the received
bytes raises ``ClientDisconnected``, and the next body chunk raises it too, so
iteration stops within one chunk and ``close()`` runs in the thread. A request the
server cancels is treated the same way.

Deadlines. ``body_timeout`` (60 s, nginx's ``client_body_timeout``) bounds each wait
for the next body chunk, and ``body_deadline`` (300 s, Node.js's ``requestTimeout``)
the whole body, less the time it waited unread for a thread: past either, before
the application runs, the client gets 408 saying which; while it runs, its read
raises ``BodyTimeout`` and the client gets 408 if no response has started. A body
past ``max_body_size`` gets 413 the same way, whatever the application does with the
``BodyTooLarge`` its read raises: the refusal is decided before the read fails.

Errors. Until the headers go out (with the first byte of a streamed body, or at the
end of a whole one), an exception (or a body shorter than its Content-Length)
becomes a clean 500 with no detail, and ``start_response(...,
exc_info)`` may still replace the headers. After, the queued bytes go out and no
final ``http.response.body`` follows, so the server cuts the connection and the
client sees a truncated response (raising instead would do the same, but daphne
4.2 then loses its application checker for the rest of the process).

Defaults and their precedent: ``max_uploads`` 1000 (gunicorn's --worker-connections),
``max_upload_memory`` 256 MiB (256 bodies at ``request_buffer_size``),
``request_buffer_size`` 1 MiB (nginx buffers request
bodies before the upstream sees them; its client_body_buffer_size spools past it),
``response_buffer_size`` 1 MiB (nginx's proxy_buffers hold a response so the upstream
is free), ``body_timeout`` 60 s (nginx), ``max_threads`` 32 and ``max_pending`` 2048
(``threads/pool.py``: Python's executor cap and gunicorn's backlog).
"""
