"""uvicorn's HTTP protocols, retiring the way gunicorn's workers do: no accepted request is lost.

When a uvicorn worker stops (``--max-requests``, SIGTERM, SIGHUP under a supervisor),
uvicorn closes its listening sockets and then calls ``shutdown()`` on every connection,
which closes those with no request in progress. A connection the kernel handed over a
moment earlier, whose request has not arrived yet, counts as idle and is closed
unanswered: its client sees a reset, though another worker shares the socket and would
have answered. gunicorn's own workers serve what they accepted.

So here a connection that has never sent a request is not closed by ``shutdown()``: it
gets the keep-alive timeout (the time uvicorn gives any idle connection) to send one,
which is answered with ``Connection: close``. A connection that finished a response and
sits idle is closed at once, as before; one in the middle of a request finishes it, and
a streamed response from a migrated view (an SSE feed) ends with its final chunk.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..lifespan import draining
from .logs import marked, one_traceback

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional; "auto" then means h11, as in uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

# uvicorn's --http choices, as the import strings uvicorn.Config accepts for ``http``.
PROTOCOLS = {
    "h11": "bridge.serve.draining:DrainingH11Protocol",
    "httptools": "bridge.serve.draining:DrainingHttpToolsProtocol",
}
PROTOCOLS["auto"] = PROTOCOLS["h11" if HttpToolsProtocol is None else "httptools"]

# uvicorn imports these protocols in each worker process: one failure, one log entry there.
one_traceback()


def unread(connection: Any) -> bool:
    """Whether ``connection`` has not yet sent a request: no request cycle has started,
    and no response has ended (which would have armed the keep-alive timer)."""
    return connection.cycle is None and connection.timeout_keep_alive_task is None


def retire(connection: Any) -> bool:
    """Give a connection accepted before the sockets closed its first request; True if so.

    The first connection told also tells the app's streams to end (``lifespan.draining``).
    """
    draining().begin()
    if not unread(connection) or connection.transport.is_closing():
        return False
    connection.retiring = True
    connection.timeout_keep_alive_task = connection.loop.call_later(
        connection.timeout_keep_alive, connection.timeout_keep_alive_handler
    )
    return True


class Retiring:
    """What both of uvicorn's HTTP protocols get here: the app served through
    ``logs.marked``, a ``shutdown()`` that answers an unread connection, and one request
    then close on a connection kept for that. Mixed in before the uvicorn class."""

    retiring = False
    app: Any
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = marked(self.app)  # each request task gets its own log note

    def shutdown(self) -> None:
        if not retire(self):
            super().shutdown()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.retiring and self.cycle is not None:
            self.cycle.keep_alive = False  # one request, then close


class DrainingH11Protocol(Retiring, H11Protocol):
    """uvicorn's h11 protocol that answers the first request of a connection it just accepted."""


if HttpToolsProtocol is not None:

    class DrainingHttpToolsProtocol(Retiring, HttpToolsProtocol):
        """uvicorn's httptools protocol that answers the first request of a new connection."""
