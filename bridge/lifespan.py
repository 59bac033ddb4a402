"""Run the ASGI lifespan protocol of mounted apps inside bridge's own; end streams on shutdown.

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
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, TypeVar

from ._types import ASGIApp, Message

T = TypeVar("T")

logger = logging.getLogger("bridge")


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

    async def stream(self, body: AsyncIterable[T]) -> AsyncIterator[T]:
        """``body``'s items until it ends or the server begins to shut down; then it is closed."""
        task = asyncio.current_task()
        iterator = body.__aiter__()
        try:
            while not self.started and task is not None:
                self._waiting.add(task)
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not self.started:
                        raise  # cancelled by someone else: the client left, or the server
                    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
                    if uncancel is not None:
                        uncancel()
                    return
                finally:
                    self._waiting.discard(task)
                yield item
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()


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
