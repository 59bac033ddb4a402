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

The budget counts what shadow runs really hold. At most ``max_shadows`` runs at once
per ``Bridge``; of those, the runs that hold a worker thread (a ``def`` view, a view
in the legacy middleware, a noise-learning run of the legacy app) at most
``thread_share`` of ``max_threads``: a fifth, as Envoy's retry budget lets retries add
a fifth to the active requests, and never the last thread. None starts while every
worker thread is busy or the event loop lags (``max_lag``). A run past its
``timeout`` counts as failed at once, but it keeps its slot until it has really
ended: an ``async`` view is cancelled, while a run in a thread cannot be (Python
cannot stop a thread), so it keeps its slot and its thread's share until the view
returns. A hung ``def`` view therefore costs one slot of the shadows' share, never
the legacy app's threads. A request that finds no room is answered by the legacy
app alone and counted as skipped, with its reason, as is one whose request or
response body is over ``max_body`` (its kept bytes are dropped at once, so capture
costs at most ``max_body`` per direction and request).

The comparison costs the loop little whatever the bodies: byte-identical bodies
match without being parsed; bodies of more than ``INLINE_COMPARE`` (16 KiB) together
are parsed and walked in a pool thread (a thread the run holds), JSON over 64 KiB in
pieces (``slices.py``) since one ``json.loads`` call would hold the GIL throughout;
only small ones are compared on the loop. The walk is iterative, so a document of any depth is
compared, and JSON nested deeper than the parser goes is compared as text.

A view on the loop that awaits a thread-sensitive ``sync_to_async`` call is cancelled
at its timeout like any async view, but the call's thread runs on until the call
returns (the request's lane, ``bridge.threads.pool``): such a view holds no share of
the threads in this count, and a call that hangs shows in the pool's busy threads.

Noise (``Shadow(noise=True)``): on the first request, and then on ``noise_rate`` of
them, the legacy app answers the same request a second time (no client sees it);
where its two answers differ is noise, learned for the route and left out of every
later comparison, and listed on the dashboard (Diffy's idea).

Sampling (``rate``) is per request, or sticky with ``key``: a hash of the route and
the request's cookie, header or address (``bridge.sticky``), so one user's requests
are all shadowed or none, in every worker.

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
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._types import Message, Receive, Scope, Send, WSGIApp
from ..metrics.values import Count
from ..sticky import draw
from ..wsgi.environ import RequestPath
from .compare import Captured, Difference, compare
from .config import Shadow
from .stats import ShadowStats, counts, hear, kept_request, prometheus, whole_server

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

# Bodies of up to this many bytes together are compared on the loop, larger ones in a
# thread: 16 KiB of JSON parses and is walked field by field in about 1 ms (measured:
# 30 KiB of rows with booleans, the worst case, took 1.8 ms; without booleans, equal
# subtrees are skipped in C and it took 0.5 ms).
INLINE_COMPARE = 16 * 1024

# The share of max_threads shadow runs may hold at once: a fifth, as Envoy's retry
# budget (budget_percent 20 %) lets retries add a fifth to the active requests.
THREAD_SHARE = 0.2

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
    @property
    def is_async(self) -> bool: ...
    @property
    def wsgi(self) -> WSGIApp | None: ...


class Run:
    """One shadow run's notes, reachable from its context in the loop and in its thread:
    the first exception a view logged (serve_view logs it, then answers 500)."""

    __slots__ = ("error", "exception", "stats")

    def __init__(self, stats: ShadowStats) -> None:
        self.stats = stats
        self.exception = ""
        self.error = ""

    def noted(self, exc: BaseException) -> None:
        """Keep the first exception only: a later one is a consequence of it."""
        if not self.exception:
            self.exception = type(exc).__name__
            self.error = f"The view raised {type(exc).__name__}: {exc}"


# The shadow run this context belongs to; None outside one.
_shadow_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "bridge_shadow_run", default=None
)


class QuietShadows(logging.Filter):
    """On the "bridge" logger: records logged by a shadow run (the view's exception,
    logged where views are served) pass once per route per ``interval`` seconds, marked
    as coming from a shadow run; every other record passes untouched."""

    def __init__(self, interval: float = DEFAULT_LOG_INTERVAL) -> None:
        super().__init__()
        self.interval = interval

    def filter(self, record: logging.LogRecord) -> bool:
        run = _shadow_run.get()
        if run is None:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            run.noted(record.exc_info[1])
        stats = run.stats
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
    ``max_shadows`` bounds the shadow runs at once (``Bridge`` checks it); ``wsgi_app`` is
    the legacy app, asked a second time by noise-learning runs; ``lag`` reads the
    event-loop lag (the metrics' probe) when there is one; ``sample`` draws a number in
    [0, 1) for the sampling rate (a test may fix it).
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
        wsgi_app: WSGIApp | None = None,
    ) -> None:
        self.pool = pool
        self.legacy = legacy
        self.view = view
        self.max_shadows = max_shadows
        # Threads shadow runs may hold at once: a fifth of the pool, at least one, never
        # the last one.
        self.thread_share = min(max(1, int(pool.max_threads * THREAD_SHARE)), pool.max_threads - 1)
        self.max_lag = max_lag
        self.lag = lag
        self.sample = sample
        self.wsgi_app = wsgi_app
        self.running = 0  # shadow runs started and not ended; loop-only
        self.threads_held = 0  # of those, the runs that hold a thread; loop-only
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
        self._stats: dict[int, ShadowStats] = {}
        self._tasks: dict[asyncio.Task[None], bool] = {}  # run -> whether it holds a thread

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

    def report(self, index: int, kind_id: str) -> dict[str, Any] | None:
        """The download of a kept kind: route ``index`` (its place in ``routes``)."""
        routes = self.routes
        return routes[index].report(kind_id) if 0 <= index < len(routes) else None

    def counts(self) -> list[Count]:
        """The shadow counters, for the files that sum them across workers."""
        return counts(list(self._stats.values()))

    def whole_server(
        self, entries: list[dict[str, Any]], summed: dict[str, dict[Any, float]]
    ) -> list[dict[str, Any]]:
        """``snapshot()`` with every worker's counts (``Metrics.snapshot`` calls this)."""
        return whole_server(entries, summed)

    def hear(self, summed: dict[str, dict[Any, float]]) -> None:
        """Every worker's counts, just read (``Metrics.refresh`` calls this): a mismatch
        in another worker ends this worker's streaks too."""
        hear(list(self._stats.values()), summed)

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
        if config.rate < 1 and not draw(route.rule, config.sticky, scope, config.rate,
                                        self.sample):  # fmt: skip
            stats.sample_out()
            await legacy(path, scope, receive, send)
            return
        learn = config.noise and (stats.noise_runs == 0 or self.sample() < config.noise_rate)
        in_thread = not route.is_async or route.wsgi is not None
        busy = self._busy(learn or in_thread)
        if busy == "share" and learn and not in_thread:
            learn = False  # the second legacy answer needs a thread; the view does not
            busy = self._busy(False)
        holds_thread = learn or in_thread
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
        problem = tee.problem() or capture.problem() or self._busy(holds_thread)
        if problem is not None:
            stats.skip(problem)
            return
        child = dict(scope)
        child["headers"] = list(scope.get("headers", ()))
        child["extensions"] = {}  # no pathsend or early hints: the shadow's bytes are kept
        run = self._run(route, values, path, child, tee.body, capture.captured(), stats, learn)
        self.running += 1
        self.threads_held += holds_thread
        task = context.run(asyncio.ensure_future, run)
        self._tasks[task] = holds_thread
        task.add_done_callback(self._finished)

    def _busy(self, holds_thread: bool) -> str | None:
        """Why a shadow run may not start now, or None when it may."""
        if self.running >= self.max_shadows:
            return "budget"
        # in_flight, the loop's own count, rather than the threads' (which lag a moment
        # behind a call that has just returned), so the rule does not depend on timing.
        pool = self.pool
        if pool.in_flight >= pool.max_threads:
            return "threads"
        if holds_thread and self.threads_held >= self.thread_share:
            return "share"
        if self.lag is not None and self.lag() > self.max_lag:
            return "loop"
        return None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running -= 1
        self.threads_held -= self._tasks.pop(task)
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
        learn: bool,
    ) -> None:
        config = route.shadow
        assert config is not None
        run = Run(stats)
        _shadow_run.set(run)  # this task's own context: for QuietShadows
        # What a report keeps of the request, made only for a report (a match keeps none).
        request = functools.partial(kept_request, scope["method"], scope["path"],
                                    scope.get("query_string", b""), scope["headers"], body,
                                    config)  # fmt: skip
        sink = ResponseCapture(None, config.max_body)
        in_thread = not route.is_async or route.wsgi is not None
        view = self.view
        served = view(route, values, path, scope, replay(body), sink.send)
        late = f"The view did not answer within {config.timeout:g} s."
        if not await _within(served, config.timeout, not in_thread,
                             lambda: stats.fail(request(), late, "timeout")):  # fmt: skip
            return
        raised = (run.exception, run.error)  # before the legacy app may log its own
        if learn and self.wsgi_app is not None:
            await self._learn(route, path, scope, body, legacy, stats)
        if raised[0]:
            stats.fail(request(), raised[1], raised[0])
            return
        problem = sink.problem()
        if problem == "response_too_large":
            stats.skip(problem)
            return
        if problem is not None:
            stats.fail(request(), "The view did not send a whole response.", "incomplete")
            return
        shadow = sink.captured()
        if shadow.status >= 500 and legacy.status < 500:
            stats.fail(request(), f"The view answered {shadow.status}.", f"status {shadow.status}")
            return
        try:
            differences = await self._compare(legacy, shadow, config, tuple(stats.noise))
        except Exception as exc:
            what = "The normaliser" if config.normalise is not None else "The comparison"
            logger.exception("%s of the shadow route %s raised", what, route.rule)
            stats.fail(request(), f"{what} raised {type(exc).__name__}: {exc}",
                       f"{what.split()[1]} {type(exc).__name__}")  # fmt: skip
            return
        if differences:
            stats.mismatch(request(), differences, legacy, shadow)
        else:
            stats.match()

    async def _learn(
        self, route: Route, path: RequestPath, scope: Scope, body: bytes, legacy: Captured,
        stats: ShadowStats,
    ) -> None:  # fmt: skip
        """Ask the legacy app the same request again and learn where its answers differ.

        It is asked through the same code as a view in the legacy middleware, unmetered:
        a route object of its own whose "view inside the middleware" is the legacy app.
        A second answer with another status teaches nothing about fields (a flaky 500
        must not become noise), nor does one that cannot be compared."""
        config = route.shadow
        assert config is not None
        again = dataclasses.replace(route, wsgi=self.wsgi_app)  # type: ignore[type-var]
        second = ResponseCapture(None, config.max_body)
        asked = self.view(again, {}, path, scope, replay(body), second.send)
        if not await _within(asked, config.timeout, False) or second.problem() is not None:
            return
        if second.status != legacy.status:
            return
        try:
            found = await self._compare(legacy, second.captured(), config, ())
        except Exception:  # a normaliser that raises here raises for the view too
            return
        stats.learn_noise(found)

    async def _compare(
        self, legacy: Captured, shadow: Captured, config: Shadow, noise: tuple[str, ...]
    ) -> list[Difference]:
        """``compare`` on the loop for small bodies, in a pool thread for larger ones."""
        call = functools.partial(compare, legacy, shadow, config.headers, config.normalise,
                                 show_bodies=config.show_bodies, noise=noise)  # fmt: skip
        if len(legacy.body) + len(shadow.body) <= INLINE_COMPARE:
            return call()
        return await self.pool.run(call)

    # -- replaying a kept report ----------------------------------------------------------

    async def replay(
        self,
        route: Route,
        values: dict[str, Any],
        path: RequestPath,
        scope: Scope,
        body: bytes,
        headers: tuple[str, ...] = ("content-type",),
        noise: tuple[str, ...] = (),
    ) -> Replayed:
        """Answer one request with the legacy app and with the view, one after the other, and
        compare them as the route's shadow runs do (``bridge replay``). A route that is no
        longer a shadow route is compared on ``headers``; ``noise`` (learned where the
        report was kept) is left out, with what this process has learned; bodies are
        shown in full, since this runs on the developer's machine, not on a dashboard."""
        config = route.shadow or Shadow(headers=headers)
        stats = self._stats.get(id(route))
        noise = (*noise, *(stats.noise if stats is not None else ()))
        limit = max(config.max_body, 64 * 1024 * 1024)
        first, second = ResponseCapture(None, limit), ResponseCapture(None, limit)
        await self.legacy(path, scope, replay(body), first.send)
        try:
            await asyncio.wait_for(self.view(route, values, path, scope, replay(body), second.send),
                                   config.timeout)  # fmt: skip
        except asyncio.TimeoutError:
            return Replayed(route.rule, first.captured(), second.captured(), [],
                            f"The view did not answer within {config.timeout:g} s.")  # fmt: skip
        problem = first.problem() or second.problem()
        if problem is not None:
            return Replayed(route.rule, first.captured(), second.captured(), [],
                            f"A response could not be compared ({problem}).")  # fmt: skip
        differences = compare(first.captured(), second.captured(), config.headers,
                              config.normalise, show_bodies=True, noise=noise)  # fmt: skip
        return Replayed(route.rule, first.captured(), second.captured(), differences)

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


@dataclasses.dataclass(frozen=True)
class Replayed:
    """One request answered by the legacy app and by the view, and how they compare."""

    rule: str
    legacy: Captured
    shadow: Captured
    differences: list[Difference]
    problem: str | None = None

    @property
    def matches(self) -> bool:
        return self.problem is None and not self.differences


def _nothing() -> None:
    pass


async def _within(
    served: Awaitable[object], timeout: float, cancel: bool, late: Callable[[], None] = _nothing
) -> bool:
    """Run ``served`` for at most ``timeout`` seconds; True if it ended in time.

    Past the timeout, ``late()`` is called at once (the run is counted as failed then),
    and ``served`` is cancelled when ``cancel`` (a view on the loop), else awaited to its
    end (a view in a thread, which no cancellation stops): either way this returns only
    once it has ended, so the run keeps its slot as long as it holds anything."""
    task = asyncio.ensure_future(served)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return True
        late()
        if cancel:
            task.cancel()
        await asyncio.wait({task})
        return False
    except asyncio.CancelledError:  # the shutdown: stop the view too
        task.cancel()
        raise
    finally:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a view's own errors are answered as a 500
