"""The value types every broadcast backend shares: events, their ids, the hub and backend protocols.

A leaf: the hub and each backend import from here, never from each other.
"""

from __future__ import annotations

import json
import re
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


# Redis's stream ids: two unsigned 64-bit integers, ASCII digits only (int() would
# also take "1_000", " 12" or Arabic-Indic digits, which Redis refuses).
_EVENT_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_PART = 2**64 - 1


def event_key(event_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` as ``(1700000000000, 3)``, the order of ids in a channel.

    Raises ``ValueError`` with a sentence for anything Redis would not take as an id:
    a client's ``Last-Event-ID`` is checked here, so it gets a 400, never a 500.
    """
    found = _EVENT_ID.fullmatch(event_id) if isinstance(event_id, str) else None
    if found is not None:
        high, low = int(found[1]), int(found[2] or 0)
        if high <= _MAX_PART and low <= _MAX_PART:
            return high, low
    raise ValueError(
        f'Event id "{event_id!s:.60}" must be in format "<milliseconds>-<sequence>", two '
        'numbers below 2**64 such as "1700000000000-0", as bridge gives them.'
    )


class Hub(Protocol):
    """What a backend sees of the ``Broadcast``: where to hand the events it reads."""

    def deliver(self, event: Event) -> None: ...


class Backend(Protocol):
    """Where events live. Every method runs on the event loop."""

    async def start(self, hub: Hub) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, channel: str, payload: str) -> str | None: ...
    async def history(self, channel: str, after: str, count: int) -> list[Event]: ...
    def position(self, channel: str) -> str | None: ...
    async def watch(self, channel: str) -> None: ...
    def unwatch(self, channel: str) -> None: ...


class IdClock:
    """Makes ids in Redis's ``<ms>-<seq>`` form, increasing even if the clock steps back."""

    def __init__(self) -> None:
        self._last = (0, 0)
        self._lock = threading.Lock()

    @property
    def last(self) -> str:
        """The last id made ("0-0" before the first): every later one is greater."""
        return f"{self._last[0]}-{self._last[1]}"

    def next(self) -> str:
        with self._lock:
            now = int(time.time() * 1000)
            ms, seq = self._last
            self._last = (now, 0) if now > ms else (ms, seq + 1)
            return f"{self._last[0]}-{self._last[1]}"
