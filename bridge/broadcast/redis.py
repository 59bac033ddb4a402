"""The ``redis://`` backend: each channel is a Redis Stream, read by one connection per process.

Theory of operation. Publishing is ``XADD <prefix><channel> MAXLEN ~ max_len``, on
redis-py's pooled asyncio client. Reading is one task per process holding one
connection of its own, blocked in ``XREAD`` on every channel that has a local
subscriber, from the last id it read of each. A channel subscribed for the first time
starts at the stream's newest id (read with ``XREVRANGE``), and the reader is woken
from its block with ``CLIENT UNBLOCK`` to add it, so its first event is not late.

When Redis goes away the reader logs one warning, retries with exponential backoff
(0.1 s doubling to 5 s, with jitter, as redis-py's own ``ExponentialBackoff``), and
on reconnecting reads on from the ids it remembers: whatever was added meanwhile
arrives, in order. Publishes that fail meanwhile wait in an outbox bounded in bytes,
in order, and are sent when Redis answers again; so a legacy request that creates an
item while Redis is down still answers, and its event is not lost.

A Redis that hangs (stopped, swapping, a network that drops packets) does not refuse:
it just never answers. A publish therefore waits at most ``publish_deadline`` for its
``XADD``; past it, the ``XADD`` goes on in the background at the head of the outbox and
the publish returns None at once, as for a Redis that is down, so a legacy request
that publishes answers in its usual time. An ``XADD`` that gave up on a hung Redis may
still have been read by it, so an event published across a hang is delivered at least
once (it may arrive twice), never lost while it fits in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import Event, Hub

logger = logging.getLogger("bridge.broadcast")

# The reader's longest block; CLIENT UNBLOCK ends it sooner when a channel is added.
BLOCK_MS = 5000
# Entries one XREAD may return; a burst larger than this is read in several calls.
READ_COUNT = 1000
# Backoff between reconnection attempts (seconds), as redis-py's ExponentialBackoff.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
# Seconds a publish waits for Redis before its event goes to the outbox: far below
# publish_sync's 10 s and a request's usual budget, and far above a healthy XADD
# (well under a millisecond on a LAN); redis-py's own default is to wait forever.
DEFAULT_PUBLISH_DEADLINE = 0.25
# Bytes of events a process holds while Redis is away, oldest dropped past it: Redis's
# own soft limit for a pub/sub client's output buffer (client-output-buffer-limit
# pubsub 8mb); at 1 KiB an event, a minute of a busy app.
DEFAULT_OUTBOX_SIZE = 8 * 1024 * 1024
# What one outbox entry costs beyond its channel and payload (the tuple and strings).
ENTRY_OVERHEAD = 128

FIELD = "d"
# What an unreachable or restarting Redis raises.
UNREACHABLE = (OSError, RedisConnectionError, RedisTimeoutError)


@dataclass(eq=False)
class Pending:
    """One event in the outbox, known by identity (two may be equal)."""

    channel: str
    payload: str
    sending: asyncio.Task[str] | None = None  # its own XADD, past the publish deadline


def _retrieved(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()


def _cost(channel: str, payload: str) -> int:
    """What one outbox entry holds in memory, near enough (ASCII JSON: a byte a char)."""
    return len(channel) + len(payload) + ENTRY_OVERHEAD


def _backoff(attempt: int) -> float:
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return delay * random.uniform(0.5, 1.0)


class RedisBackend:
    """Streams in Redis for the events, one reader per process for the subscribers."""

    def __init__(
        self,
        url: str,
        *,
        max_len: int,
        prefix: str,
        publish_deadline: float = DEFAULT_PUBLISH_DEADLINE,
        outbox_size: int = DEFAULT_OUTBOX_SIZE,
    ) -> None:
        if url.startswith("valkey"):
            url = "redis" + url[len("valkey") :]
        self.url = url
        self.max_len = max_len
        self.prefix = prefix
        self.publish_deadline = publish_deadline
        self.outbox_size = outbox_size
        self._hub: Hub | None = None
        self._client: Any = None  # redis.asyncio.Redis, for XADD, XRANGE, CLIENT UNBLOCK
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Wake-ups sent after a watch; stop() ends them before it closes the client,
        # or one caught mid-command reconnects to a closed pool and leaks its socket.
        self._wakers: set[asyncio.Task[None]] = set()
        self._positions: dict[str, str] = {}  # channel -> last id read
        self._version = 0  # bumped when the set of channels changes
        self._reading_version = -1  # the version the reader's current XREAD covers
        self._reader_id: int | None = None  # the reader connection's CLIENT ID
        self._reading: Any = None  # the reader's own connection, while it is open
        self._changed = asyncio.Event()
        # Events waiting for Redis, oldest first; those whose own XADD outlived its
        # deadline carry it, since it may still land.
        self._outbox: deque[Pending] = deque()
        self._outbox_bytes = 0
        self._down_since: float | None = None
        self._stopping = False
        self.dropped = 0  # outbox events lost because Redis stayed away too long

    def _client_for(self, **options: Any) -> Any:
        return redis.asyncio.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1),
            **options,
        )

    def _key(self, channel: str) -> str:
        return self.prefix + channel

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self._client = self._client_for(socket_timeout=5)
        self._changed = asyncio.Event()
        self._stopping = False
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def stop(self) -> None:
        # redis-py may absorb a cancellation that lands inside a command, so the
        # reader also checks this flag, and is woken if it waits for channels.
        self._stopping = True
        self._changed.set()
        if self._reader_id is not None and self._client is not None:
            with contextlib.suppress(*UNREACHABLE):
                await self._client.client_unblock(self._reader_id)
        sending = [p.sending for p in self._outbox if p.sending is not None]
        tasks = [t for t in (self._reader, self._flusher, *sending, *self._wakers) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=BLOCK_MS / 1000 + 1)
        self._reader = self._flusher = None
        # A reader cancelled inside its own close (or past the wait) leaves its
        # connection open: close it here, before the loop that owns it ends.
        reading, self._reading = self._reading, None
        if reading is not None:
            with contextlib.suppress(Exception):
                await reading.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> str | None:
        if not self._outbox:
            send = asyncio.get_running_loop().create_task(self._xadd(channel, payload))
            # Not wait_for: the XADD must outlive the deadline, not be cancelled by it.
            await asyncio.wait({send}, timeout=self.publish_deadline)
            if not send.done():
                # Its outcome is the flusher's to act on; if the flusher never gets to
                # it (dropped from a full outbox), it is read here and not logged as lost.
                send.add_done_callback(_retrieved)
                self._went_down(
                    TimeoutError(f"no answer within publish_deadline={self.publish_deadline} s"),
                    "publishing",
                )
                self._queue(channel, payload, send)
                return None
            try:
                return send.result()
            except UNREACHABLE as exc:
                self._went_down(exc, "publishing")
        self._queue(channel, payload)
        return None

    async def _xadd(self, channel: str, payload: str) -> str:
        event_id: str = await self._client.xadd(
            self._key(channel), {FIELD: payload}, maxlen=self.max_len, approximate=True
        )
        return event_id

    def _queue(self, channel: str, payload: str, sending: asyncio.Task[str] | None = None) -> None:
        """Put an event at the end of the outbox, dropping the oldest past ``outbox_size``;
        ``sending`` is its own XADD, still on its way (publishes at once may each have one)."""
        self._outbox.append(Pending(channel, payload, sending))
        self._outbox_bytes += _cost(channel, payload)
        while self._outbox_bytes > self.outbox_size and len(self._outbox) > 1:
            self._drop_oldest()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _drop_oldest(self) -> None:
        dropped = self._outbox.popleft()  # an XADD on its way may still land: counted as lost
        self._outbox_bytes -= _cost(dropped.channel, dropped.payload)
        if not self.dropped:
            logger.warning(
                "The live-event outbox is full (outbox_size=%d bytes) while Redis at %s is "
                "away: the oldest events are dropped and counted. Raise outbox_size to "
                "hold longer outages.",
                self.outbox_size,
                self.url,
            )
        self.dropped += 1

    async def _flush(self) -> None:
        """Send the outbox in order once Redis answers again."""
        attempt = 0
        while self._outbox and not self._stopping:
            entry = self._outbox[0]
            sending, entry.sending = entry.sending, None
            try:
                if sending is not None:
                    await sending  # the publish that ran out of time: its own answer
                else:
                    await self._xadd(entry.channel, entry.payload)
            except UNREACHABLE as exc:
                self._went_down(exc, "publishing")
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                continue
            if self._outbox and self._outbox[0] is entry:  # not dropped meanwhile
                self._outbox.popleft()
                self._outbox_bytes -= _cost(entry.channel, entry.payload)
            attempt = 0
        self._came_back()

    # -- replay -------------------------------------------------------------------------

    async def history(self, channel: str, after: str, count: int) -> list[Event]:
        try:
            # The newest ``count`` entries after ``after``, read newest first: a
            # subscriber keeps only its last ``backlog`` events anyway, so reading more
            # would be work thrown away. "(" makes the bound exclusive (Redis 6.2+).
            entries = await self._client.xrevrange(
                self._key(channel), max="+", min=f"({after}", count=count
            )
        except UNREACHABLE as exc:
            logger.warning(
                'Replaying channel "%s" after id %s failed (%s); the subscriber gets live '
                "events only.",
                channel,
                after,
                exc,
            )
            return []
        return [Event.make(i, channel, f[FIELD]) for i, f in reversed(entries)]

    def position(self, channel: str) -> str | None:
        return self._positions.get(channel)

    # -- subscribing --------------------------------------------------------------------

    async def watch(self, channel: str) -> None:
        """Start reading ``channel`` from its newest entry (now)."""
        try:
            newest = await self._client.xrevrange(self._key(channel), count=1)
            start = newest[0][0] if newest else "0-0"
        except UNREACHABLE:
            # Redis is away: start from this host's clock, which is Redis's own on one
            # machine and close to it on a network.
            start = f"{int(time.time() * 1000)}-0"
        self._positions.setdefault(channel, start)
        self._version += 1
        self._changed.set()
        if not self._stopping:
            waker = asyncio.get_running_loop().create_task(self._wake())
            self._wakers.add(waker)
            waker.add_done_callback(self._wakers.discard)

    def unwatch(self, channel: str) -> None:
        self._positions.pop(channel, None)
        self._version += 1

    async def _wake(self) -> None:
        """Unblock the reader's XREAD until it reads with the new set of channels."""
        for _ in range(200):
            reader_id, client = self._reader_id, self._client
            if (
                self._stopping
                or self._reading_version >= self._version
                or reader_id is None
                or client is None
            ):
                return
            with contextlib.suppress(*UNREACHABLE):
                await client.client_unblock(reader_id)
            await asyncio.sleep(0.005)

    async def _read_forever(self) -> None:
        attempt = 0
        while not self._stopping:
            connection = self._reading = self._client_for(
                single_connection_client=True, socket_timeout=BLOCK_MS / 1000 + 10
            )
            try:
                self._reader_id = await connection.client_id()
                attempt = 0
                self._came_back()
                await self._read(connection)
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                self._went_down(exc, "reading")
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
            except Exception:
                logger.exception("The live-event reader failed; it starts again.")
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
            finally:
                self._reader_id = None
                with contextlib.suppress(Exception):
                    await connection.aclose()
                self._reading = None

    async def _read(self, connection: Any) -> None:
        hub = self._hub
        assert hub is not None
        positions = self._positions
        while not self._stopping:
            self._reading_version = self._version
            if not positions:
                self._changed.clear()
                await self._changed.wait()
                continue
            channels = {self._key(c): c for c in positions}
            streams = {key: positions[c] for key, c in channels.items()}
            reply = await connection.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            for key, entries in reply or ():
                channel = channels[key]
                for event_id, fields in entries:
                    if channel in positions:
                        positions[channel] = event_id
                    hub.deliver(Event.make(event_id, channel, fields[FIELD]))

    # -- outage bookkeeping -------------------------------------------------------------

    def _went_down(self, exc: BaseException, doing: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "Redis at %s is unreachable while %s live events (%s); retrying with "
                "backoff. Publishes wait in an outbox of %d bytes meanwhile.",
                self.url,
                doing,
                exc,
                self.outbox_size,
            )

    def _came_back(self) -> None:
        if self._down_since is not None and not self._outbox:
            logger.warning(
                "Redis at %s answers again after %.1f s; live events resume.",
                self.url,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
