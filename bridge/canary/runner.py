"""``Canaries``: the canary routes of one ``Bridge``: which arm answers, the fallback, the channel.

Theory of operation
-------------------

A request that matches a canary route is given an arm before anything is read: the
view's when ``bridge.sticky.draw`` puts the route's rule and the request's key (or a
random number, when there is no key) inside the route's current share, else the
legacy app's. The legacy arm is the ordinary legacy path; its answers are counted as
the control group.

The view's arm runs the view through the same code that serves any route, with two
wrappers, and nothing else in between:

* ``receive`` is teed (``BodyCopy``): the body chunks the view reads are kept, up to
  ``request_buffer_size`` bytes (the size bridge holds in memory anyway).
* ``send`` is watched (``Answer``): a ``http.response.start`` with a 5xx status is
  held back, with everything after it, when the request may fall back (the route's
  ``fallback``, a GET, HEAD or OPTIONS unless ``unsafe``, the body still whole in the
  copy, the client still there). An exception in the view becomes bridge's 500 before
  any byte is sent, so it is held back the same way.

While the view runs, an error record with a traceback logged for it (bridge logs the
view's exception where views are served) is held (``HeldRecords``): a fallback is then
logged once, one warning that carries that traceback, and an answer that stands lets
the held records go out as they were.

When the view's answer was held back, the legacy app answers the request instead,
through the ordinary legacy path, from a ``receive`` that gives the kept body first
and then reads on from the client. Nothing of the view's answer reached the client:
an ASGI server writes nothing before ``http.response.start``. A 5xx after body bytes
went out (a streamed response that fails midway) cannot be taken back and is not.

Every answer is counted in its arm (requests, errors, fallbacks, latency to the end
of the answer); each failure of the view's arm applies the rollback rule
(``CanaryControl._judge``). A change of share or state is published on the
``bridge.canary`` channel of the app's broadcast, and every worker subscribed to it
applies what it reads, its own changes included, in the channel's order, so workers
that change the same canary at the same moment still end on the same setting. A
worker that starts later replays the channel's kept events (Redis keeps them), so it
starts from the current setting, not the one in the code. Every message carries the
fingerprint of the route's ``Canary`` settings, and only a worker with the same
settings applies it: a deploy that changes them starts afresh from the code, as a new
revision restarts Flagger's analysis. The channel is followed from the ASGI lifespan
start-up; under a server run without lifespan, a change stays in the worker making it.

What it costs: a request of any other route, nothing (the dispatch looks at
``route.canary`` only for a matched route). A canary route's request pays one
``blake2b`` of its key, two wrapper calls per message, and, in the view's arm, a copy
of a body it has already received; with several workers, a few microseconds more to
write its counts to the shared files. A fallback costs the failed view's run, one
log record and the legacy app's answer. ``scripts/bench --only canary`` measures
each arm against the same request without a canary.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._types import Receive, Scope, Send
from ..shadow.runner import Legacy
from ..sticky import draw
from ..wsgi.environ import RequestPath
from .config import Canary
from .control import LEGACY, VIEW, CanaryControl
from .counts import Counts
from .fallback import HOLD, Answer, BodyCopy, hold_records, never, release_records

if TYPE_CHECKING:
    from ..broadcast.hub import Broadcast

logger = logging.getLogger("bridge")

CHANNEL = "bridge.canary"
# Seconds the start-up waits for the control channel's kept events. A Redis that
# answers does so in milliseconds; one that has not in 2 s is in trouble, and the
# worker serves on the code's setting rather than not at all (it catches up later).
START_WAIT = 2.0

# A route's view answering and counted (Bridge._route); the legacy app is served as
# for shadow routes (shadow.runner.Legacy).
ServeView = Callable[[Any, dict[str, Any], RequestPath, Scope, Receive, Send], Awaitable[object]]


class Route(Protocol):
    """What a canary needs of a route (``bridge.routing.Route`` has it)."""

    @property
    def rule(self) -> str: ...


class Canaries:
    """The canary routes of one ``Bridge``: their controls, counts and control channel.

    ``body_limit`` is the most request body bytes kept for a fallback (the Bridge's
    ``request_buffer_size``); ``legacy`` and ``view`` answer a request with the legacy
    app or a route's view; ``directory`` is the whole-server metrics directory when
    there is one; ``sample`` draws per-request numbers in [0, 1) (a test may fix it).
    """

    def __init__(
        self,
        body_limit: int,
        *,
        legacy: Legacy,
        view: ServeView,
        directory: str | None = None,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.body_limit = body_limit
        self.legacy = legacy
        self.view = view
        self.sample = sample
        self._exported = Counts(directory)  # written as counted, read from every worker
        self._controls: dict[str, CanaryControl] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broadcast: Broadcast | None = None
        self._listener: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[Any]] = set()
        if HOLD not in logger.filters:
            logger.addFilter(HOLD)  # each fallback logged once, with the view's traceback

    # -- registration and control ---------------------------------------------------------

    def add(self, route: Route, config: Canary) -> CanaryControl:
        if route.rule in self._controls:
            raise ValueError(
                f'The route "{route.rule}" already has a canary; app.canary("{route.rule}") '
                "controls one canary per rule: give the other methods no canary= or another rule."
            )
        control = self._controls[route.rule] = CanaryControl(route.rule, config)
        if self._listener is not None:
            control.announce_with(self._announce)
        return control

    def control(self, rule: str) -> CanaryControl:
        """The control of the canary route ``rule``; ``LookupError`` with a sentence if none."""
        found = self._controls.get(rule)
        if found is None:
            known = ", ".join(f'"{r}"' for r in self._controls) or "none"
            raise LookupError(
                f'"{rule}" is not the rule of a canary route (canary routes: {known}); '
                "register it with app.route(rule, canary=0.05)."
            )
        return found

    def act(self, rule: str, action: str, share: object = None) -> dict[str, Any]:
        """Apply the dashboard's ``action`` ("set", "rollback", "promote") to ``rule``."""
        control = self.control(rule)
        if action == "set":
            control.set(share)  # type: ignore[arg-type]  # check_share says what is wrong
        elif action == "rollback":
            control.rollback()
        elif action == "promote":
            control.promote()
        else:
            raise ValueError(
                f'The canary action "{action}" must be "set", "rollback" or "promote".'
            )
        state, current = control.setting
        return {"rule": rule, "state": state, "share": current}

    @property
    def controls(self) -> list[CanaryControl]:
        return list(self._controls.values())

    # -- serving --------------------------------------------------------------------------

    async def serve(
        self,
        route: Route,
        values: dict[str, Any],
        path: RequestPath,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer with the view or the legacy app, as the route's share and the request's
        key say."""
        legacy, view = self.legacy, self.view
        control = self._controls[route.rule]
        share = control.setting[1]
        start = time.perf_counter()
        if not draw(control.rule, control.key, scope, share, self.sample):
            answer = Answer(send, never)
            try:
                await legacy(path, scope, receive, answer.send)
            except Exception:
                self._record(control, LEGACY, True, start)
                raise
            self._record(control, LEGACY, answer.status >= 500, start)
            return
        config = control.config
        may_fall_back = config.falls_back(scope["method"])
        copy = BodyCopy(receive, self.body_limit) if may_fall_back else None
        if copy is None:
            answer = Answer(send, never)
            try:
                await view(route, values, path, scope, receive, answer.send)
            except Exception:
                self._record(control, VIEW, True, start)
                raise
            self._record(control, VIEW, answer.status >= 500, start)
            return
        answer = Answer(send, lambda: copy.whole)
        held, token = hold_records()
        error: Exception | None = None
        try:
            await view(route, values, path, scope, copy.receive, answer.send)
        except Exception as exc:
            if not (copy.whole and answer.status == 0):
                self._record(control, VIEW, True, start)
                raise
            error = exc
            answer.held = True
        finally:
            release_records(token)
        if not answer.held:
            for record in held:  # the view's answer stands: so do its records
                logger.handle(record)
            self._record(control, VIEW, answer.status >= 500, start)
            return
        exc_info = held[0].exc_info if held else error
        logger.warning(
            "The canary view of %s failed (%s) for %s %s; the legacy app answered instead.",
            control.rule,
            answer.status or "an exception",
            scope["method"],
            scope.get("path", ""),
            exc_info=exc_info,
        )
        try:
            await legacy(path, scope, copy.resume(), send)
        finally:
            self._record(control, VIEW, True, start, fallback=True)

    def _record(
        self, control: CanaryControl, arm: str, failed: bool, start: float, fallback: bool = False
    ) -> None:
        seconds = time.perf_counter() - start
        control.record(arm, failed, seconds, fallback)
        self._exported.observe(control.rule, arm, failed, seconds, fallback)

    # -- the control channel --------------------------------------------------------------

    async def start(self, broadcast: Broadcast) -> None:
        """Follow the control channel of ``broadcast``: replay its kept events, then listen."""
        if not self._controls or self._listener is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._broadcast = broadcast
        ready: asyncio.Future[None] = loop.create_future()
        self._listener = loop.create_task(self._listen(broadcast, ready))
        # A Redis that does not answer must not hold the start-up: past the wait, this
        # worker starts from the code's setting and applies the channel's once it can.
        await asyncio.wait({ready}, timeout=START_WAIT)
        for control in self._controls.values():
            control.announce_with(self._announce)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        for control in self._controls.values():
            control.announce_with(None)
        tasks = [t for t in (listener, *self._publishing) if t is not None]
        if listener is not None:
            listener.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._loop = None

    async def _listen(self, broadcast: Broadcast, ready: asyncio.Future[None]) -> None:
        try:
            async with broadcast.subscribe(CHANNEL, last_id="0-0") as events:
                # The replayed events are queued now; apply them before the first request.
                while not events.empty():
                    self._apply(events.get_nowait().data)
                ready.set_result(None)
                async for event in events:
                    self._apply(event.data)
        except Exception:
            logger.exception(
                "Following the canary control channel failed; changes made in other workers "
                "no longer reach this one."
            )
        finally:
            if not ready.done():
                ready.set_result(None)

    def _apply(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        control = self._controls.get(data.get("rule", ""))
        if control is None or data.get("config") != control.config.fingerprint:
            return  # a canary of another version of the app, or of other settings
        if not control.apply(data.get("state", ""), data.get("share", -1)):
            logger.warning("Ignored a canary control message that is not one: %r", data)

    def _announce(self, rule: str, state: str, share: float) -> None:
        """Publish a change (from any thread) on the control channel, in order."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        control = self._controls[rule]
        data = {"rule": rule, "state": state, "share": share, "config": control.config.fingerprint}
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(data)
        else:
            loop.call_soon_threadsafe(self._publish, data)

    def _publish(self, data: dict[str, Any]) -> None:
        broadcast = self._broadcast
        if broadcast is None or self._listener is None:
            return
        task = asyncio.ensure_future(broadcast.publish(CHANNEL, data))
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[Any]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Publishing a canary change failed; other workers keep their setting.",
                exc_info=task.exception(),
            )

    # -- reading --------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return self._exported.snapshot(self.controls)

    def prometheus(self) -> str:
        return self._exported.prometheus(self.controls)
