"""The response as a state machine: events in, ASGI messages out, and no I/O.

Everything that decides how a response is framed lives in this file, in the manner
of h11's ``_state.py``: the machine is fed what the application did (``start``,
``body``, ``end``, ``error``), what the client did (``client_gone``) and what the
request body did (``body_failed``: 413 or 408); it answers with the ASGI messages to send,
in order, from ``take()``. It has no threads, no lock and no clock, so every
transition is tested at message level (tests/wsgi/test_framing.py).
``bridge.wsgi.sender`` owns one per request and guards it.

States (``State``), and the event that leaves each one::

    IDLE ──start──▶ HOLDING ──a chunk of a streamed body, or past the buffer──▶ STREAMING
      │               │  ╲──end──▶ DONE (headers with a Content-Length, then the body)    │
      │               │   ╲─error / short body──▶ FAILED (a clean 500)                    │
      │               ╰── body_failed ──▶ REFUSED (the 413 or 408 the request earned)     │
      ╰─ end / error ──▶ FAILED                     STREAMING ──end──▶ DONE              │
                                                   STREAMING ──error / short body──▶ CUT ◀╯
    any state ──client_gone──▶ GONE (nothing more is sent)

The framing rule: how a body is framed follows from what the application returned,
never from a clock.

1. A body whole in memory goes out whole, with its length: one the application
   returned as a list or tuple (``whole=True``), whatever its size, or one whose
   chunk reaches its declared Content-Length. It is held until the application is
   done (``end``), then the headers (with a Content-Length added if none was
   declared, except for HEAD, 1xx, 204 and 304) and the body go out together: one
   handoff, no backpressure.
2. Any other body (a generator, a file, an iterator of unknown length) streams from
   its first non-empty chunk: the headers and that chunk go out at once, with no
   Content-Length added, and every later chunk follows as it is produced. gunicorn,
   a2wsgi and granian frame such a body the same way, and a generator that sleeps
   before each chunk reaches the client as it was written to. A response that carries
   no body (HEAD, 1xx, 204, 304) has no chunk to stream: its headers go out at the end.
3. A response to an HTTP/1.0 request that declares no Content-Length is held until
   it ends, since an HTTP/1.0 client cannot read chunked framing (RFC 9112 6.1), and
   sent with the length it turned out to have. The bound is ``buffer_size``, as for
   any held response: past it the headers go out with no length and the server
   frames the rest its own way (uvicorn's h11 protocol and granian close the
   connection at the end; uvicorn's httptools protocol chunks it, which an HTTP/1.0
   client cannot read, so serve such clients with ``--http h11`` or give large bodies
   a Content-Length).

The same application behaviour therefore always gives the same messages, whatever
the thread scheduling: the headers go out with the first byte of the body, so an
error (or ``start_response(..., exc_info)``) before that replaces them with a clean
500 (or the new headers), and an error after it is always a cut response: the queued
bytes go out, and no final ``http.response.body`` follows, so the server closes the
connection and the client sees a truncated body, never a short one that looks
complete.
"""

from __future__ import annotations

import enum

from .._types import Message, RawHeaders
from ..errors import ClientDisconnected, ResponseError

# A response body up to this size is handed to the server whole and the thread is
# free at once, however slowly the client reads; past it the thread waits for the
# client (backpressure). nginx's proxy_buffers hold 8 x 4-8 KiB per response and
# gunicorn's sync workers hold nothing, pinning the worker for the whole send;
# 1 MiB covers nearly every HTML page and JSON document at a cost of at most 1 MiB
# per in-flight response.
DEFAULT_RESPONSE_BUFFER = 1024 * 1024


class State(enum.Enum):
    IDLE = "idle"  # start_response has not been called
    HOLDING = "holding"  # headers known, nothing sent, the body held
    STREAMING = "streaming"  # headers out, the body flows
    DONE = "done"  # the whole response is out (or in the outbox)
    CUT = "cut"  # headers out, the body will not complete: cut the connection
    FAILED = "failed"  # an error before the headers: a 500 is out
    REFUSED = "refused"  # the request body failed before the headers: 413 or 408
    GONE = "gone"  # the client left


TERMINAL = frozenset({State.DONE, State.CUT, State.FAILED, State.REFUSED, State.GONE})
# The states still open to the application; a tuple, since ``in`` on it tests
# identity first, which is cheaper than hashing an enum member.
_OPEN = (State.IDLE, State.HOLDING, State.STREAMING)

REFUSALS = {
    400: "Bad Request\n",
    408: "Request Timeout: the request body stalled.\n",
    413: "Request Entity Too Large\n",
    431: "Request Header Fields Too Large\n",
    500: "Internal Server Error\n",
    503: "Service Unavailable: every worker thread is busy; retry shortly.\n",
}


def plain_response(
    status: int, extra_headers: RawHeaders | None = None, text: str | None = None
) -> list[Message]:
    """The two ASGI messages of a short text/plain answer bridge gives itself; ``text``
    replaces the status's usual sentence (saying which budget was full, say)."""
    body = (REFUSALS[status] if text is None else text).encode("utf-8")
    headers: RawHeaders = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


# Refusals close the connection: otherwise the server reads and discards whatever
# body the client goes on sending, and a chunked upload has no end it must reach.
CLOSE = (b"connection", b"close")


def closing_headers(status: int, retry_after: int = 1) -> RawHeaders:
    """The headers of an answer bridge gives in the application's place: a refusal closes
    the connection, and a 503 says when to retry (RFC 9110 10.2.3); a 500 keeps it open,
    since its request was read whole."""
    if status == 500:
        return []
    if status == 503:
        return [CLOSE, (b"retry-after", str(retry_after).encode("ascii"))]
    return [CLOSE]


class Framing:
    """One response's state machine; see the module docstring for the rule.

    ``head``: the request is a HEAD (no body is sent). ``http10``: the request is
    HTTP/1.0 (held to the end when it declares no Content-Length). ``buffer_size``:
    the most an HTTP/1.0 body is held before it streams (``response_buffer_size``),
    and the backlog past which the producer should wait for the client.
    """

    __slots__ = (
        "_held",
        "_held_bytes",
        "_outbox",
        "backlog",
        "body_allowed",
        "buffer_size",
        "content_length",
        "head",
        "headers",
        "http10",
        "overflowed",
        "path",
        "state",
        "status",
        "written",
    )

    def __init__(
        self,
        *,
        head: bool = False,
        http10: bool = False,
        buffer_size: int = DEFAULT_RESPONSE_BUFFER,
    ) -> None:
        self.head = head
        self.http10 = http10
        self.buffer_size = buffer_size
        self.state = State.IDLE
        self.status = 0
        self.headers: RawHeaders = []
        self.content_length: int | None = None
        self.body_allowed = True
        self.written = 0  # body bytes the application produced (within Content-Length)
        self.overflowed = False  # it produced more than its Content-Length
        self.backlog = 0  # body bytes in the outbox or sent but not yet acknowledged
        self.path: str | None = None  # a file the server sends by path (pathsend)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._outbox: list[Message] = []

    # -- what the application does ----------------------------------------------------

    @property
    def headers_sent(self) -> bool:
        """Whether ``http.response.start`` has gone to the outbox with the app's headers."""
        return self.state in (State.STREAMING, State.DONE, State.CUT)

    def start(
        self,
        status: int,
        headers: RawHeaders,
        content_length: int | None,
        replace: bool = False,
    ) -> None:
        """``start_response``; ``replace`` when it carries ``exc_info`` (after an error).

        The caller re-raises ``exc_info`` instead when ``headers_sent`` (PEP 3333).
        """
        state = self.state
        if state is State.HOLDING and not replace:
            raise ResponseError(
                "start_response() was called a second time without exc_info; "
                "pass exc_info=sys.exc_info() to replace the headers after an error."
            )
        if state is not State.IDLE and state is not State.HOLDING:
            return  # the answer is decided already (refused, gone)
        self.state = State.HOLDING
        self.status = status
        self.headers = headers
        self.content_length = content_length
        # RFC 9110 6.4.1: no body for HEAD, 1xx, 204 and 304.
        self.body_allowed = not (self.head or status in (204, 304) or status < 200)
        self.written = 0
        self._held = []
        self._held_bytes = 0

    def body(self, data: bytes, whole: bool = False) -> bool:
        """A body chunk (``whole``: part of a list body); True once no more is wanted."""
        state = self.state
        if state is not State.HOLDING and state is not State.STREAMING:
            if state is State.IDLE:
                raise ResponseError("The application produced body data before start_response().")
            if state is State.GONE:
                raise ClientDisconnected("The client disconnected during the response.")
            return True  # refused, failed, cut or done: the rest is not wanted
        complete = False
        limit = self.content_length
        if limit is not None:
            remaining = limit - self.written
            if len(data) >= remaining:
                if len(data) > remaining:
                    self.overflowed = True
                    data = data[:remaining]
                complete = True
        self.written += len(data)
        if not (self.body_allowed and data):
            return complete
        if state is State.STREAMING:
            self._outbox.append({"type": "http.response.body", "body": data, "more_body": True})
            self.backlog += len(data)
            return complete
        self._held.append(data)
        self._held_bytes += len(data)
        if complete or whole:
            return complete  # rule 1: whole in memory, sent whole at the end
        if self._held_bytes > self.buffer_size or not (self.http10 and limit is None):
            self._commit()  # rule 2 (or rule 3 past its bound): stream from here
        return complete

    def send_path(self, path: str, size: int) -> bool:
        """Let the server send the file at ``path`` (``http.response.pathsend``).

        Only before any body byte; True if taken (the body is then complete).
        """
        if self.state is not State.HOLDING or self.written:
            return False
        if self.content_length is None:
            self.headers = [*self.headers, (b"content-length", str(size).encode("ascii"))]
            self.content_length = size
        self.written = size
        self.path = path
        return True

    def end(self) -> ResponseError | None:
        """The application is done; returns the contract it broke, if it broke one."""
        state = self.state
        if state is State.IDLE:
            problem = ResponseError("The application returned without calling start_response().")
            self._fail()
            return problem
        if state is not State.HOLDING and state is not State.STREAMING:
            return None
        declared = self.content_length
        if self.body_allowed and declared is not None and self.written < declared:
            problem = ResponseError(
                f"The application declared a Content-Length of {declared} bytes "
                f"but produced {self.written}."
            )
            self.error()
            return problem
        if state is State.STREAMING:
            self._outbox.append({"type": "http.response.body", "body": b"", "more_body": False})
            self.state = State.DONE
            return None
        headers = self.headers
        if self.path is not None:
            self._outbox.append(self._start_message(headers))
            self._outbox.append({"type": "http.response.pathsend", "path": self.path})
            self.state = State.DONE
            return None
        if declared is None and self.body_allowed:
            # The whole body is known, so its length is too: a client (or proxy) can
            # then tell a complete response from a cut one without chunked framing.
            # (Not for HEAD: gunicorn adds none there, and the app may not have
            # produced the body a GET would get.)
            headers = [*headers, (b"content-length", str(self.written).encode("ascii"))]
        self._outbox.append(self._start_message(headers))
        held = self._held
        if len(held) > 1 and self._held_bytes <= self.buffer_size:
            held = [b"".join(held)]
        if len(held) <= 1:
            self._outbox.append({"type": "http.response.body", "body": held[0] if held else b""})
        else:
            for chunk in held:
                self._outbox.append(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            self._outbox.append({"type": "http.response.body", "body": b""})
        self.backlog += self._held_bytes
        self._held = []
        self._held_bytes = 0
        self.state = State.DONE
        return None

    def error(self) -> None:
        """The application raised: a clean 500 before the headers, a cut response after."""
        state = self.state
        if state is State.IDLE or state is State.HOLDING:
            self._fail()
        elif state is State.STREAMING:
            self.state = State.CUT  # what is queued goes out, then nothing

    # -- what the request and the client do -------------------------------------------

    def body_failed(self, status: int) -> bool:
        """The request body failed (413 too large, 408 stalled): answer that instead, if
        no response has started; True if that answer is now in the outbox."""
        if self.state is not State.IDLE and self.state is not State.HOLDING:
            return False
        self._drop()
        self._outbox = plain_response(status, closing_headers(status))
        self.status = status
        self.state = State.REFUSED
        return True

    def client_gone(self) -> None:
        """The client disconnected: nothing more is sent, whatever was queued."""
        self._drop()
        self._outbox = []
        self.state = State.GONE

    def sent(self, nbytes: int) -> None:
        """``nbytes`` of body left the outbox and went to the server."""
        self.backlog -= nbytes

    # -- what goes out ------------------------------------------------------------------

    def take(self) -> list[Message]:
        """The messages to send now, in order; each is taken once."""
        out = self._outbox
        if out:
            self._outbox = []
        return out

    @property
    def pending(self) -> bool:
        return bool(self._outbox)

    @property
    def finished(self) -> bool:
        """Nothing more will ever be sent: a terminal state with an empty outbox."""
        return self.state not in _OPEN and not self._outbox

    def _start_message(self, headers: RawHeaders) -> Message:
        return {"type": "http.response.start", "status": self.status, "headers": headers}

    def _commit(self) -> None:
        """Send the headers (with no Content-Length added) and what is held; stream on."""
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        # Once out, the headers are not needed again: a long stream does not keep them.
        headers, self.headers = self.headers, []
        self._outbox.append(self._start_message(headers))
        self._outbox.append({"type": "http.response.body", "body": data, "more_body": True})
        self.backlog += len(data)
        self._held = []
        self._held_bytes = 0
        self.state = State.STREAMING

    def _fail(self) -> None:
        self._drop()
        self._outbox = plain_response(500)
        self.status = 500
        self.state = State.FAILED

    def _drop(self) -> None:
        self._held = []
        self._held_bytes = 0
