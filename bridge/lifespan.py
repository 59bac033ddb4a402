"""bridge's side of the ASGI lifespan protocol, and mounted apps' lifespans inside it.

``Lifespan`` runs the startup and shutdown hooks, starts and stops bridge's own
services around them, and on shutdown drains the requests still in threads.

``draining()`` is the other end of a server's shutdown: when the server stops
accepting (``bridge serve`` and the gunicorn worker tell it so; see
``serve/draining.py``), streamed responses that would run forever (an SSE feed)
end at once with their final chunk, instead of holding the shutdown until the
graceful timeout and then dying with a traceback each.

A mounted Starlette or FastAPI app opens its database pool and clients on
``lifespan.startup``; the server sends that message to bridge only, so bridge
passes it on. ASGI spec: "If an exception is raised when calling the application
callable with a lifespan.startup message or a scope with type lifespan, the server
must continue but not send any lifespan events" — an app that does not speak
lifespan is simply left out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from ._types import ASGIApp, Message, Receive, Scope, Send
from .threads.admission import Admission
from .threads.pool import ThreadPool

logger = logging.getLogger("bridge")

Hook = Callable[..., Any]
Step = Callable[[], Awaitable[None]]

# How long shutdown waits for requests still running in threads; gunicorn's
# --graceful-timeout is 30 seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

# How long shutdown waits for the thread of a request the server has already
# cancelled: the server's graceful timeout has run out, so only a moment more.
CANCELLED_GRACE = 1.0


def unsupported_event_loop() -> str | None:
    """Why bridge cannot run on the current event loop, or None when it is asyncio's.

    bridge hands work between threads and the loop with asyncio primitives
    (``call_soon_threadsafe``, asyncio queues and futures, asgiref's
    ``async_to_sync``), so it needs a running asyncio loop (uvloop is one). Under
    trio (hypercorn's ``--worker-class trio``) there is none: the server is told at
    startup, in a sentence, rather than every request failing later.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return (
            "bridge runs on asyncio only, and this server runs another event loop "
            "(trio?); start it with an asyncio worker, for example "
            "hypercorn --worker-class asyncio (or uvloop), or use uvicorn or granian."
        )
    return None


class MountedLifespan:
    """One mounted app's lifespan: a task running it, fed and read through two queues."""

    def __init__(self, prefix: str, app: ASGIApp) -> None:
        self.prefix = prefix
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self, state: dict[str, Any]) -> None:
        """Send ``lifespan.startup``; raise ``RuntimeError`` if the app reports failure.

        ``state`` is the server's lifespan state (ASGI: "Applications can store
        arbitrary data in this namespace"), shared with bridge's own hooks; the server
        copies it into every request's scope, and so the mounted app's requests see
        what its lifespan put there (Starlette's ``request.state.db``).
        """
        scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "state": state,
        }
        self._task = asyncio.ensure_future(self._run(scope))
        reply = await self._ask({"type": "lifespan.startup"})
        if reply is not None and reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(
                f'The app mounted at "{self.prefix}" failed to start: {reply.get("message", "")}'
            )

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app's answer (a failure is logged)."""
        if self._task is None or self._task.done():
            return
        reply = await self._ask({"type": "lifespan.shutdown"})
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            logger.error(
                'The app mounted at "%s" failed to shut down: %s',
                self.prefix,
                reply.get("message", ""),
            )
        if not self._task.done():
            self._task.cancel()

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._inbox.get, self._outbox.put)
        except Exception:
            logger.debug('The app mounted at "%s" does not support lifespan.', self.prefix)

    async def _ask(self, message: Message) -> Message | None:
        """Send ``message``; the app's reply, or None if it returned (no lifespan support)."""
        assert self._task is not None
        self._inbox.put_nowait(message)
        reply = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if reply.done():
            return reply.result()
        reply.cancel()
        return None


class Lifespan:
    """One ``Bridge``'s lifespan: hooks, mounted apps, its own services, the drain.

    ``on_startup`` and ``on_shutdown`` are the user's hooks (the lists ``Bridge`` keeps);
    ``mounts`` lists the mounted apps, as ``(prefix, app)``, when lifespan starts;
    ``start`` starts bridge's own services once the hooks have run; ``stop_streams``
    ends the live streams before the drain, so it is short; ``stop`` stops the rest
    after it. ``state`` is the lifespan state (ASGI: "Applications can store arbitrary
    data in this namespace"): the server's once lifespan has started, else bridge's own.
    """

    def __init__(
        self,
        pool: ThreadPool,
        admission: Admission,
        on_startup: list[Hook],
        on_shutdown: list[Hook],
        mounts: Callable[[], Sequence[tuple[str, ASGIApp]]],
        start: Step,
        stop_streams: Step,
        stop: Step,
    ) -> None:
        self.pool = pool
        self.admission = admission
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self._mounts = mounts
        self._start = start
        self._stop_streams = stop_streams
        self._stop = stop
        self.state: dict[str, Any] = {}

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI lifespan: "state" is a namespace the server copies into every request's
        # scope. A server that offers none gets bridge's own dict, which mounted apps
        # then receive in their request scopes from bridge (see mounts.mounted_scope).
        if scope.get("state") is not None:
            self.state = scope["state"]
        state = self.state
        mounted = [MountedLifespan(prefix, app) for prefix, app in self._mounts()]
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                refusal = unsupported_event_loop()
                if refusal is not None:
                    logger.error("%s", refusal)
                    await send({"type": "lifespan.startup.failed", "message": refusal})
                    return
                try:
                    for hook in self.on_startup:
                        await call_hook(hook, state)
                    for app in mounted:
                        await app.startup(state)
                except Exception as exc:
                    logger.exception("A startup hook failed.")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop_streams()
                await self.drain()
                await self._stop()
                for app in reversed(mounted):
                    await app.shutdown()
                try:
                    for hook in self.on_shutdown:
                        await call_hook(hook, state)
                except Exception as exc:
                    logger.exception("A shutdown hook failed.")
                    self.pool.shutdown()
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                self.pool.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def drain(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Wait for requests still in threads to finish, up to ``timeout`` seconds.

        A request the server cancelled (past its own graceful timeout) no longer counts
        as in flight, but its thread may still be in the app. Its thread gets at most
        ``CANCELLED_GRACE`` more, so that a short overrun ends before the shutdown hooks
        run, while the server's graceful timeout still bounds the whole shutdown.
        """
        pool = self.pool
        admission = self.admission
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while admission.admitted and loop.time() < deadline:
            await asyncio.sleep(0.01)
        deadline = min(deadline, loop.time() + CANCELLED_GRACE)
        while pool.running and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if admission.admitted or pool.running:
            logger.warning(
                "%d requests were still running in threads at shutdown; they are abandoned.",
                max(admission.admitted, pool.running),
            )


async def call_hook(hook: Hook, state: dict[str, Any]) -> None:
    """Run a lifespan hook; one that takes an argument receives the lifespan state."""
    args = (state,) if _takes_argument(hook) else ()
    if inspect.iscoroutinefunction(hook):
        await hook(*args)
        return
    result = await sync_to_async(hook)(*args)
    if isinstance(result, Awaitable):
        await result


def _takes_argument(hook: Hook) -> bool:
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        and p.default is p.empty
        for p in parameters
    )


class Draining:
    """Whether the server on this loop is shutting down, and the streams to end when it does.

    One per event loop, used on that loop only. A stream is listed only while it waits
    for its next item, so ``begin()`` never interrupts a chunk being sent.
    """

    def __init__(self) -> None:
        self.started = False
        self._waiting: set[asyncio.Task[Any]] = set()

    def begin(self) -> None:
        """The server stopped accepting: end every stream at its next wait (idempotent)."""
        if self.started:
            return
        self.started = True
        for task in list(self._waiting):
            task.cancel(_DRAIN_MESSAGE)

    def hold(self, task: asyncio.Task[Any] | None) -> bool:
        """List ``task`` while its stream waits for its next item; False once the
        shutdown has begun, when the stream should end instead."""
        if self.started:
            return False
        if task is not None:
            self._waiting.add(task)
        return True

    def release(self, task: asyncio.Task[Any] | None) -> None:
        """The stream's next item came (or it ended): ``task`` is no longer waiting."""
        self._waiting.discard(task)


_DRAIN_MESSAGE = "bridge: the server is shutting down"
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Draining] = (
    weakref.WeakKeyDictionary()
)


def draining() -> Draining:
    """The running loop's ``Draining`` (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = Draining()
    return found
