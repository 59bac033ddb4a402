"""The ``memory://`` backend: events live in this process, for this process's subscribers."""

from __future__ import annotations

from collections import deque

from .base import Event, Hub, IdClock, event_key


class MemoryBackend:
    """Keeps the last ``max_len`` events of each channel, for replay, in process memory."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self._hub: Hub | None = None
        self._kept: dict[str, deque[Event]] = {}
        self._ids = IdClock()

    async def start(self, hub: Hub) -> None:
        self._hub = hub

    async def stop(self) -> None:
        self._hub = None

    async def publish(self, channel: str, payload: str) -> str:
        event = Event.make(self._ids.next(), channel, payload)
        kept = self._kept.get(channel)
        if kept is None:
            kept = self._kept[channel] = deque(maxlen=self.max_len)
        kept.append(event)
        if self._hub is not None:
            self._hub.deliver(event)
        return event.id

    async def history(self, channel: str, after: str, count: int) -> list[Event]:
        floor = event_key(after)
        kept = self._kept.get(channel, ())
        newest: list[Event] = []
        for event in reversed(kept):  # the newest ``count``, walked from the end
            if event.key <= floor or len(newest) == count:
                break
            newest.append(event)
        newest.reverse()
        return newest

    def position(self, channel: str) -> str | None:
        return self._ids.last

    async def watch(self, channel: str) -> None:
        return None

    def unwatch(self, channel: str) -> None:
        return None
