"""Shadow routes: the legacy app answers, and the migrated view runs on the same request.

Theory of operation
-------------------

A route registered with ``shadow=`` is not served by its view. The legacy app
answers the client through the ordinary legacy path, with two wrappers around the
ASGI callables, and nothing else in between:

* ``receive`` is teed: each ``http.request`` body chunk is kept, up to
  ``max_body`` bytes, while the legacy app reads it. The message itself goes to the
  legacy app unchanged.
* ``send`` is teed the same way: the status, the headers and up to ``max_body``
  bytes of body are kept, and every message goes on to the client unchanged, the
  same object, so the client's bytes are the bytes it would get without a shadow.

Only when the legacy response has gone out whole does the shadow run start, as a
task of its own: the view is served, through the same code that would serve it for
real, a copy of the scope, a ``receive`` that replays the kept body, and a ``send``
that keeps the response and sends nothing. Its cookies and every other header are
dropped with it. The two responses are then compared (``bridge.shadow.compare``) and the
outcome counted (``bridge.shadow.stats``). The client's request is over before the
shadow starts: it cannot delay, change or fail the client's response.

The budget: at most ``max_shadows`` shadow runs at once per ``Bridge``, each
stopped after ``timeout`` seconds (a failure), and none started while every worker
thread is busy or the event loop lags (``max_lag``): shadows take only what the
legacy traffic leaves. A request that finds no room is answered by the legacy app
alone and counted as skipped, with its reason, as is one whose request or response
body is over ``max_body`` (its kept bytes are dropped at once, so capture costs at
most ``max_body`` per direction and request).

Only GET, HEAD and OPTIONS are shadowed unless the route opts in with
``Shadow(unsafe=True)``: the view runs as well as the legacy app, so a view that
writes would write twice. Registering a shadow route whose methods include any
other method without that opt-in is an error, raised at registration.

Counters live in this process: with ``--workers 4`` each worker shadows and counts
its own requests, and the Prometheus series of all workers add up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._types import Message, Receive, Scope, Send
from ..wsgi.environ import RequestPath
from .compare import Captured, compare
from .config import Shadow
from .stats import ShadowStats, prometheus

if TYPE_CHECKING:
    from ..threads.pool import ThreadPool

logger = logging.getLogger("bridge")


# Shadow runs at once per Bridge. A shadow run of a sync view holds a worker thread:
# 4 is an eighth of the default pool (32), so shadows can never take much from the
# legacy traffic, and still compare every request of a route at a few hundred
# requests a second when the view answers in ~10 ms.
DEFAULT_MAX_SHADOWS = 4
# A shadow run is dropped (counted as skipped) while the loop-lag probe of
# bridge.metrics reads more than this: half of the 100 ms at which the metrics call a
# step a block, so shadows back off before the loop is in trouble.
DEFAULT_MAX_LAG = 0.05

# A broken shadow view on a busy route would log a traceback per request: one record
# per route per minute says what is wrong (the counts say how often), as the
# loop-blocking warnings of bridge.metrics do.
DEFAULT_LOG_INTERVAL = 60.0

# How the legacy app and a route's view are served (``Bridge._legacy``, ``Bridge._serve_route``),
# given the request's path as the dispatch derived it.
Legacy = Callable[[RequestPath, Scope, Receive, Send], Awaitable[None]]
ServeView = Callable[[Any, dict[str, Any], RequestPath, Scope, Receive, Send], Awaitable[object]]


class Route(Protocol):
    """What a shadow run needs of a route (``bridge.routing.Route`` has it)."""

    @property
    def rule(self) -> str: ...
    @property
    def methods(self) -> frozenset[str] | None: ...
    @property
    def shadow(self) -> Shadow | None: ...


# The stats of the route whose shadow run this context belongs to; None outside one.
_shadow_route: contextvars.ContextVar[ShadowStats | None] = contextvars.ContextVar(
    "bridge_shadow_route", default=None
)


class QuietShadows(logging.Filter):
    """On the "bridge" logger: records logged by a shadow run (the view's exception,
    logged where views are served) pass once per route per ``interval`` seconds, marked
    as coming from a shadow run; every other record passes untouched."""

    def __init__(self, interval: float = DEFAULT_LOG_INTERVAL) -> None:
        super().__init__()
        self.interval = interval

    def filter(self, record: logging.LogRecord) -> bool:
        stats = _shadow_route.get()
        if stats is None:
            return True
        now = time.monotonic()
        last = stats.logged_at
        if last is not None and now - last < self.interval:
            return False
        stats.logged_at = now
        prefix = (
            f"In the shadow run of {stats.rule} (the client got the legacy response; more such "
            f"messages muted for {self.interval:g} s): "
        )
        record.msg = prefix.replace("%", "%%") + str(record.msg)
        return True


_QUIET = QuietShadows()


class BoundedCopy:
    """A copy of one message stream's body, dropped whole once it passes ``limit`` bytes."""

    __slots__ = ("chunks", "complete", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] | None = []  # None: over the limit, dropped
        self.complete = False

    def keep(self, message: Message) -> None:
        """Copy a body message's bytes (while within the limit) and note the last one."""
        chunks = self.chunks
        if chunks is not None:
            body = message.get("body", b"")
            self.size += len(body)
            if self.size > self.limit:
                self.chunks = None
            elif body:
                chunks.append(bytes(body))
        if not message.get("more_body", False):
            self.complete = True

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks or ())


class RequestTee(BoundedCopy):
    """``receive`` for the legacy app: passes every message on, and keeps the body."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Receive, limit: int) -> None:
        super().__init__(limit)
        self._receive = receive

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.keep(message)
        return message

    def problem(self) -> str | None:
        if self.chunks is None:
            return "request_too_large"
        if not self.complete:
            return "incomplete"  # the legacy app did not read it all: no whole request
        return None


class ResponseCapture(BoundedCopy):
    """``send`` that keeps the response, and passes every message on when given a ``send``."""

    __slots__ = ("_send", "file", "headers", "status")

    def __init__(self, send: Send | None, limit: int) -> None:
        super().__init__(limit)
        self._send = send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.file = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            self.keep(message)
        elif kind == "http.response.pathsend":
            self.file = True
            self.complete = True
        if self._send is not None:
            await self._send(message)

    def problem(self) -> str | None:
        if self.file:
            return "file"
        if self.chunks is None:
            return "response_too_large"
        if not self.complete or not self.status:
            return "incomplete"
        return None

    def captured(self) -> Captured:
        return Captured(self.status, self.headers, self.body)


def replay(body: bytes) -> Receive:
    """``receive`` for the shadow view: the kept body in one message, then nothing
    (the shadow's client never leaves; the run ends with the view or its timeout)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # until the run is cancelled
        raise AssertionError("unreachable")  # pragma: no cover

    return receive


class Shadows:
    """The shadow routes of one ``Bridge``: their budget, their running tasks, their counts.

    ``legacy`` and ``view`` serve a request with the legacy app and with a route's view;
    ``max_shadows`` bounds the shadow runs at once (``Bridge`` checks it); ``lag`` reads
    the event-loop lag (the metrics' probe) when there is one; ``sample`` draws a number
    in [0, 1) for the sampling rate (a test may fix it).
    """

    def __init__(
        self,
        pool: ThreadPool,
        *,
        legacy: Legacy,
        view: ServeView,
        max_shadows: int = DEFAULT_MAX_SHADOWS,
        max_lag: float = DEFAULT_MAX_LAG,
        lag: Callable[[], float] | None = None,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.pool = pool
        self.legacy = legacy
        self.view = view
        self.max_shadows = max_shadows
        self.max_lag = max_lag
        self.lag = lag
        self.sample = sample
        self.running = 0  # shadow runs started and not finished; loop-only
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
        self._stats: dict[int, ShadowStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- registration and reading ---------------------------------------------------

    def add(self, route: Route) -> ShadowStats:
        """Start counting for a shadow route (listed on the dashboard before any traffic)."""
        assert route.shadow is not None
        stats = self._stats[id(route)] = ShadowStats(route.rule, route.methods, route.shadow)
        return stats

    def stats(self, route: Route) -> ShadowStats:
        return self._stats[id(route)]

    @property
    def routes(self) -> list[ShadowStats]:
        return list(self._stats.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [stats.snapshot() for stats in self._stats.values()]

    def prometheus(self) -> str:
        return prometheus(list(self._stats.values()))

    # -- serving --------------------------------------------------------------------

    async def serve(
        self,
        route: Route,
        values: dict[str, Any],
        path: RequestPath,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer with the legacy app; then, budget permitting, start the view's shadow run."""
        legacy = self.legacy
        config = route.shadow
        assert config is not None
        stats = self._stats[id(route)]
        if config.rate < 1 and self.sample() >= config.rate:
            stats.sample_out()
            await legacy(path, scope, receive, send)
            return
        busy = self._busy()
        if busy is not None:  # no room now: do not even keep the bodies
            stats.skip(busy)
            await legacy(path, scope, receive, send)
            return
        # The context of the request as it arrived: the shadow runs in a copy of it, not
        # in the one the legacy path leaves behind (its metrics, say).
        context = contextvars.copy_context()
        tee = RequestTee(receive, config.max_body)
        capture = ResponseCapture(send, config.max_body)
        await legacy(path, scope, tee.receive, capture.send)
        problem = tee.problem() or capture.problem() or self._busy()
        if problem is not None:
            stats.skip(problem)
            return
        child = dict(scope)
        child["headers"] = list(scope.get("headers", ()))
        child["extensions"] = {}  # no pathsend or early hints: the shadow's bytes are kept
        run = self._run(route, values, path, child, tee.body, capture.captured(), stats)
        self.running += 1
        task = context.run(asyncio.ensure_future, run)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _busy(self) -> str | None:
        """Why a shadow run may not start now, or None when it may."""
        if self.running >= self.max_shadows:
            return "budget"
        # in_flight, the loop's own count, rather than the threads' (which lag a moment
        # behind a call that has just returned), so the rule does not depend on timing.
        pool = self.pool
        if pool.in_flight >= pool.max_threads:
            return "threads"
        if self.lag is not None and self.lag() > self.max_lag:
            return "loop"
        return None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running -= 1
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("A shadow run failed in bridge itself.", exc_info=task.exception())

    async def _run(
        self,
        route: Route,
        values: dict[str, Any],
        path: RequestPath,
        scope: Scope,
        body: bytes,
        legacy: Captured,
        stats: ShadowStats,
    ) -> None:
        config = route.shadow
        assert config is not None
        _shadow_route.set(stats)  # this task's own context: for QuietShadows
        request = (scope["method"], _target(scope))
        sink = ResponseCapture(None, config.max_body)
        try:
            await asyncio.wait_for(self.view(route, values, path, scope, replay(body), sink.send),
                                   config.timeout)  # fmt: skip
        except asyncio.TimeoutError:
            stats.fail(request, f"The view did not answer within {config.timeout:g} s.")
            return
        except Exception as exc:
            logger.exception("Exception in the shadow run of %s", route.rule)
            stats.fail(request, f"The view raised {exc!r}.")
            return
        problem = sink.problem()
        if problem == "response_too_large":
            stats.skip(problem)
            return
        if problem is not None:
            stats.fail(request, "The view did not send a whole response.")
            return
        shadow = sink.captured()
        if shadow.status >= 500 and legacy.status < 500:
            stats.fail(request, f"The view answered {shadow.status} (an exception is logged).")
            return
        try:
            differences = compare(legacy, shadow, config.headers, config.normalise)
        except Exception as exc:
            logger.exception("The shadow normaliser of %s raised", route.rule)
            stats.fail(request, f"The normaliser raised {exc!r}.")
            return
        if differences:
            stats.mismatch(request, differences, legacy, shadow)
        else:
            stats.match()

    # -- waiting and stopping -----------------------------------------------------------

    async def idle(self) -> None:
        """Wait until no shadow run is left (tests, and a graceful shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def stop(self) -> None:
        """Cancel the shadow runs still going: they are expendable, the shutdown is not."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks)


def _target(scope: Scope) -> str:
    query = scope.get("query_string", b"")
    path: str = scope["path"]
    return path + ("?" + query.decode("latin-1") if query else "")
