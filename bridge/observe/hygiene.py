"""Context hygiene: each request starts from a clean context and runs in one.

Within bridge, the WSGI call, each step of its iteration and ``close()`` run in one
copy of the request's context (``threads/pool.py``), as do a sync view and its
response; so nothing the legacy app sets reaches another request. Across requests
the server decides: asyncio copies a pipelined request's context from the request
before it on the connection (CPython #140947), so an outer middleware's active span,
or a value an async view set, reaches the next request. uvicorn can start each
request from an empty context instead, and bridge serve and the gunicorn worker turn
that on; under daphne, bridge serve puts ``FreshContext`` around the app.
"""

from __future__ import annotations

import asyncio
import contextvars

from .._types import ASGIApp, Receive, Scope, Send

# uvicorn's --reset-contextvars, off by default there because it hides values set in
# the lifespan's context; bridge keeps its lifespan state in the scope, not there.
RESET_CONTEXTVARS = True


class FreshContext:
    """Serve each request from an empty context, in a task of its own, for a server
    that starts a request inside the context of the one before it (daphne 4 does, for
    pipelined requests). Costs a task per request; lifespan passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        # Awaiting the task passes a cancellation on to it.
        await asyncio.get_running_loop().create_task(
            self._serve(scope, receive, send), context=contextvars.Context()
        )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
