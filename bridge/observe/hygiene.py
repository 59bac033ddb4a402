"""Context hygiene: each request starts from a clean context and runs in one.

Within bridge, the WSGI call, each step of its iteration and ``close()`` run in one
copy of the request's context (``threads/pool.py``), as do a sync view and its
response; so nothing the legacy app sets reaches another request. Across requests
the server decides: asyncio copies a pipelined request's context from the request
before it on the connection (CPython #140947), so an outer middleware's active span,
or a value an async view set, reaches the next request. uvicorn can start each
request from an empty context instead; bridge's own servers turn that on.
"""

from __future__ import annotations

# uvicorn's --reset-contextvars, off by default there because it hides values set in
# the lifespan's context; bridge keeps its lifespan state in the scope, not there.
RESET_CONTEXTVARS = True
