"""The value types every broadcast backend shares: events, their ids, the hub and backend protocols.

A leaf: the hub and each backend import from here, never from each other.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Event:
    """One published event: its ``id`` (increasing within the channel), channel and data.

    ``text`` is ``data`` as JSON, encoded once by the publisher: send it as it is
    (``ws.send_text(event.text)``) rather than encoding it again for every client.
    """

    id: str
    channel: str
    data: Any
    text: str = ""
    key: tuple[int, int] = field(default=(-1, -1), compare=False, repr=False)

    @classmethod
    def make(cls, event_id: str, channel: str, text: str) -> Event:
        """The event with this id, on this channel, of this JSON ``text``."""
        return cls(event_id, channel, json.loads(text), text, event_key(event_id))

    def sse(self, event: str = "message") -> str:
        """This event as one server-sent event, with ``id:`` for ``Last-Event-ID``."""
        payload = self.text or json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.id}\nevent: {event}\ndata: {payload}\n\n"


def event_key(event_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` as ``(1700000000000, 3)``, the order of ids in a channel."""
    high, _, low = event_id.partition("-")
    try:
        return int(high), int(low or 0)
    except ValueError:
        raise ValueError(
            f'Event id "{event_id}" must be in format "<milliseconds>-<sequence>", '
            'such as "1700000000000-0", as bridge gives them.'
        ) from None


class Hub(Protocol):
    """What a backend sees of the ``Broadcast``: where to hand the events it reads."""

    def deliver(self, event: Event) -> None: ...


class Backend(Protocol):
    """Where events live. Every method runs on the event loop."""

    async def start(self, hub: Hub) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, channel: str, payload: str) -> str | None: ...
    async def history(self, channel: str, after: str) -> list[Event]: ...
    async def watch(self, channel: str) -> None: ...
    def unwatch(self, channel: str) -> None: ...


class IdClock:
    """Makes ids in Redis's ``<ms>-<seq>`` form, increasing even if the clock steps back."""

    def __init__(self) -> None:
        self._last = (0, 0)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            now = int(time.time() * 1000)
            ms, seq = self._last
            self._last = (now, 0) if now > ms else (ms, seq + 1)
            return f"{self._last[0]}-{self._last[1]}"
