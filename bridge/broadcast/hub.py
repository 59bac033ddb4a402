"""``bridge.Broadcast``: live events from any worker to every subscriber on every worker.

Theory of operation. One ``Broadcast`` per process fans events out to the local
subscribers of each channel; the backend, chosen by URL, decides which events exist:

* ``memory://`` keeps them in this process. Nothing else is needed, and with one
  worker it is all there is to it; with ``--workers 4`` a client sees only the events
  published by the worker it happens to be connected to.
* ``redis://host:port/db`` (also Valkey) keeps each channel as a Redis Stream, trimmed
  to about ``max_len`` entries. Every process reads all its channels over one
  connection (``XREAD``) and hands each event to its own subscribers, so a thousand
  subscribers in a process cost Redis one reader, not a thousand.

Every event has an id, increasing within its channel (Redis's ``<ms>-<seq>``; the
memory backend makes them the same way). A subscriber that gives ``last_id`` (an SSE
client's ``Last-Event-ID``) first gets the kept events after it, then the live ones,
without a duplicate. The replay reads at most the subscriber's ``backlog``, the newest
events after ``last_id`` (``XREVRANGE ... COUNT``), since the subscriber's queue would
drop any older ones at once; subscribers that replay the same channel from the same id
at once share one read and the same ``Event`` objects. An id past the newest the
process has seen (a far-future one) is taken as "now": no replay, and every event from
then on, rather than silence until the clock reaches it. An id that is not one
(``event_key``) raises ``ValueError`` with a sentence before anything opens.

The Redis reader remembers the last id it read of each channel, so after a Redis
restart or a network cut it resumes where it stopped: within the ``max_len`` bound
nothing is lost.

Each subscriber has a bounded queue (``backlog`` events). One that stops reading
loses its *oldest* events (``Subscription.dropped`` counts them), so publishing never
waits for a slow client and its memory stays bounded; it is never disconnected.

Everything runs on the server's event loop. Sync code in a bridge thread calls
``publish_sync``, which runs ``publish`` on that loop and waits for it, as asgiref's
``async_to_sync`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync

from .base import Backend, Event, event_key

# Events a subscriber may fall behind by before it loses the oldest: about a minute
# of a busy feed at a few events a second; Starlette's broadcaster keeps no bound.
DEFAULT_BACKLOG = 1000
# Events kept per channel for replay (XADD MAXLEN ~). At 1 event/s that is a quarter
# of an hour of reconnection; raise it for busier channels.
DEFAULT_MAX_LEN = 1000
# How long publish_sync waits for the loop before giving up. A publish itself waits
# for Redis at most its publish_deadline (redis.py), so this fires only for a loop
# that is itself stuck.
PUBLISH_SYNC_TIMEOUT = 10.0

# The environment variable that gives the default URL (``bridge serve --broadcast``).
BROADCAST_VARIABLE = "BRIDGE_BROADCAST_URL"
REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


class Subscription:
    """The events of one channel for one subscriber, in order; iterate it on the loop."""

    def __init__(self, channel: str, backlog: int) -> None:
        self.channel = channel
        self.dropped = 0  # events lost because the subscriber fell ``backlog`` behind
        self._events: deque[Event] = deque(maxlen=backlog)
        self._waiter: asyncio.Future[None] | None = None
        self._floor: tuple[int, int] = (-1, -1)  # events at or below this were delivered
        self._held: list[Event] | None = None  # live events held while replaying
        self.closed = False

    def put(self, event: Event) -> None:
        """Queue ``event``, dropping the oldest if full; called by the ``Broadcast``."""
        if self._held is not None:
            self._held.append(event)
            return
        key = event.key if event.key[0] >= 0 else event_key(event.id)
        if key <= self._floor:
            return  # already delivered by the replay
        self._floor = key
        events = self._events
        if len(events) == events.maxlen:
            self.dropped += 1
        events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._events

    def get_nowait(self) -> Event:
        """The next queued event; ``LookupError`` if there is none yet."""
        if not self._events:
            raise LookupError(f'No event is waiting on channel "{self.channel}".')
        return self._events.popleft()

    async def get(self) -> Event:
        """The next event, waiting for it; ``StopAsyncIteration`` once the broadcast stops."""
        while not self._events:
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def _replay(self, events: list[Event]) -> None:
        """Deliver ``events`` (the replay), then the live events held meanwhile."""
        held, self._held = self._held or [], None
        for event in [*events, *held]:
            self.put(event)


class Broadcast:
    """Publish/subscribe for live events: ``Broadcast("memory://")`` or ``"redis://host:6379/0"``.

    * ``url``: ``memory://`` (the default: one process) or a Redis URL (``redis://``,
      ``rediss://``, ``unix://``; ``valkey://`` means the same). Use Redis as soon as
      the server runs more than one worker or host.
    * ``backlog=1000``: events a subscriber may fall behind by; past it, it loses its
      oldest events. Lower it for many clients that each receive large events.
    * ``max_len=1000``: events kept per channel for replay (``Last-Event-ID`` and Redis
      reconnections). Raise it if clients stay away longer than this many events.
    * ``prefix="bridge:"``: the start of each Redis key, to share a Redis database.
    * ``publish_deadline=0.25``: seconds a publish waits for Redis; past it the event
      waits in the outbox and the publish returns None, so a hung Redis never holds a
      legacy request. Raise it only for a Redis that is slow but sure.
    * ``outbox_size=8 MiB``: bytes of events held while Redis is away or hung (Redis's
      own pub/sub client buffer limit); past it the oldest are dropped and counted in
      ``dropped``. Raise it for longer outages of a busy app.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        backlog: int = DEFAULT_BACKLOG,
        max_len: int = DEFAULT_MAX_LEN,
        prefix: str = "bridge:",
        publish_deadline: float | None = None,
        outbox_size: int | None = None,
    ) -> None:
        if backlog < 1 or max_len < 1:
            raise ValueError(
                f"Broadcast backlog and max_len must be at least 1, not {backlog} and {max_len}."
            )
        if publish_deadline is not None and not (
            isinstance(publish_deadline, (int, float))
            and 0 < publish_deadline < PUBLISH_SYNC_TIMEOUT
        ):
            raise ValueError(
                f"Broadcast publish_deadline must be seconds above 0 and below publish_sync's "
                f"{PUBLISH_SYNC_TIMEOUT:g}, not {publish_deadline!r}; 0.25 is the default."
            )
        if outbox_size is not None and not (isinstance(outbox_size, int) and outbox_size > 0):
            raise ValueError(
                f"Broadcast outbox_size must be a number of bytes above 0, not {outbox_size!r}; "
                "8 * 1024 * 1024 is the default."
            )
        self.url = url
        self.backlog = backlog
        self.max_len = max_len
        scheme = urlsplit(url).scheme
        self.backend: Backend
        if scheme == "memory":
            from .memory import MemoryBackend

            self.backend = MemoryBackend(max_len)
        elif scheme in REDIS_SCHEMES:
            try:
                from .redis import RedisBackend
            except ImportError:
                raise RuntimeError(
                    f'Broadcast("{url}") needs redis-py: pip install "bridge[redis]".'
                ) from None
            tuning: dict[str, Any] = {}
            if publish_deadline is not None:
                tuning["publish_deadline"] = publish_deadline
            if outbox_size is not None:
                tuning["outbox_size"] = outbox_size
            self.backend = RedisBackend(url, max_len=max_len, prefix=prefix, **tuning)
        else:
            raise ValueError(
                f'Broadcast URL "{url}" must start with memory:// or redis:// (also rediss://, '
                'unix:// or valkey://), such as "redis://127.0.0.1:6379/0".'
            )
        self._channels: dict[str, set[Subscription]] = {}
        self._watching: dict[str, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        # Replays under way, by (channel, last id): the ones that ask the same share it.
        self._replays: dict[tuple[str, str], asyncio.Future[list[Event]]] = {}

    def __repr__(self) -> str:
        return f"Broadcast({self.url!r})"

    @classmethod
    def configured(cls, value: str | Broadcast | None = None) -> Broadcast:
        """``value`` if a ``Broadcast``, else one for the URL ``value``, else for
        ``$BRIDGE_BROADCAST_URL`` (``bridge serve --broadcast`` sets it), else ``memory://``."""
        if isinstance(value, Broadcast):
            return value
        return cls(value or os.environ.get(BROADCAST_VARIABLE) or "memory://")

    @property
    def dropped(self) -> int:
        """Published events lost in this process because Redis stayed away past the outbox."""
        return int(getattr(self.backend, "dropped", 0))

    @property
    def subscribers(self) -> int:
        """Subscriptions open in this process, over all channels."""
        return sum(len(subs) for subs in self._channels.values())

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backend on the running loop (idempotent; subscribe and publish call it).

        An unreachable Redis does not make this fail: the backend retries in the
        background, and the rest of the app keeps answering.
        """
        loop = asyncio.get_running_loop()
        starting = self._starting
        if starting is not None and self._loop is loop and starting.done():
            starting.result()
            return  # started: the fast path of every publish
        if starting is None or self._loop is not loop:
            self._loop = loop
            starting = self._starting = loop.create_task(self.backend.start(self))
        await asyncio.shield(starting)

    async def stop(self) -> None:
        """End every subscription and disconnect."""
        for subs in self._channels.values():
            for sub in subs:
                sub.close()
        self._channels.clear()
        self._watching.clear()
        if self._starting is not None:
            self._starting = None
            await self.backend.stop()
        self._loop = None

    async def __aenter__(self) -> Broadcast:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, data: Any) -> str | None:
        """Send ``data`` (anything ``json.dumps`` takes) to every subscriber of ``channel``.

        Returns the event's id, or None if Redis is away (or has not answered within
        ``publish_deadline``) and the event waits in the process's outbox, to be sent in
        order when it answers again.
        """
        payload = json.dumps(data, separators=(",", ":"))
        await self.start()
        return await self.backend.publish(channel, payload)

    def publish_sync(self, channel: str, data: Any) -> str | None:
        """``publish`` from sync code in another thread: it runs on the server's loop.

        From a bridge worker thread this is ``async_to_sync(broadcast.publish)``; from
        any other thread it still lands on the loop that started the broadcast.
        """
        loop = self._loop
        if loop is not None and not loop.is_closed():
            if _running_loop() is loop:
                raise RuntimeError(
                    "Broadcast.publish_sync() was called on the event loop, where it would "
                    "wait for itself; use 'await broadcast.publish(...)' there."
                )
            future = asyncio.run_coroutine_threadsafe(self.publish(channel, data), loop)
            return future.result(PUBLISH_SYNC_TIMEOUT)
        return async_to_sync(self.publish)(channel, data)

    # -- subscribing --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, last_id: str | None = None
    ) -> AsyncIterator[Subscription]:
        """The events of ``channel`` published from now on (after ``last_id`` if given)."""
        floor = None if last_id is None else event_key(last_id)  # a bad id raises here
        await self.start()
        sub = Subscription(channel, self.backlog)
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = set()
            # Every subscriber that arrives while the backend starts reading the
            # channel waits for it, so none returns before its events are being read.
            self._watching[channel] = asyncio.ensure_future(self.backend.watch(channel))
        if floor is not None:
            sub._held = []  # live events wait here until the replay is in
        subs.add(sub)
        try:
            await asyncio.shield(self._watching[channel])
            if last_id is not None and floor is not None:
                newest = self.backend.position(channel)
                if newest is not None and floor > event_key(newest):
                    sub._floor = event_key(newest)  # from the future: "now", no replay
                    sub._replay([])
                else:
                    sub._floor = floor
                    sub._replay(await self._history(channel, last_id))
            yield sub
        finally:
            subs.discard(sub)
            if not subs and self._channels.get(channel) is subs:
                del self._channels[channel]
                self._watching.pop(channel, None)
                self.backend.unwatch(channel)

    async def _history(self, channel: str, last_id: str) -> list[Event]:
        """The replay after ``last_id``, one read for every subscriber asking at once."""
        key = (channel, last_id)
        replay = self._replays.get(key)
        if replay is None:
            replay = asyncio.ensure_future(self.backend.history(channel, last_id, self.backlog))
            self._replays[key] = replay
            replay.add_done_callback(lambda _: self._replays.pop(key, None))
        return await asyncio.shield(replay)

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to every local subscriber of its channel (the backend calls this)."""
        for sub in self._channels.get(event.channel, ()):
            sub.put(event)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
