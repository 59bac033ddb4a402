"""The fallback's wrappers: a ``receive`` that keeps the body, a ``send`` that holds an answer.

``BodyCopy`` keeps what the view read of the body, within a budget, so the legacy app
can be given the same bytes; ``Answer`` holds back a 5xx answer before any of it
reaches the server, so the legacy app can answer instead. ``bridge.canary.runner``
says when each is used.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable

from .._types import Message, Receive, Send
from ..shadow.runner import BoundedCopy


class BodyCopy(BoundedCopy):
    """``receive`` for the view: passes every message on, and keeps up to ``limit`` body
    bytes (the shadow routes' bounded copy, ``shadow.runner.BoundedCopy``)."""

    __slots__ = ("_receive", "gone")

    def __init__(self, receive: Receive, limit: int) -> None:
        super().__init__(limit)
        self._receive = receive
        self.gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.keep(message)
        elif message["type"] == "http.disconnect":
            self.gone = True
        return message

    @property
    def whole(self) -> bool:
        """Every body byte read so far is kept, and the client is still there."""
        return self.chunks is not None and not self.gone

    def resume(self) -> Receive:
        """``receive`` for the legacy app: the kept body, then whatever the client sends."""
        first = True

        async def receive() -> Message:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": self.body, "more_body": not self.complete}
            return await self._receive()

        return receive


class Answer:
    """``send`` that notes the status, and holds back a 5xx answer when ``hold()`` allows."""

    __slots__ = ("_send", "held", "hold", "status")

    def __init__(self, send: Send, hold: Callable[[], bool]) -> None:
        self._send = send
        self.hold = hold
        self.status = 0
        self.held = False

    async def send(self, message: Message) -> None:
        if self.held:
            return  # the rest of an answer the legacy app replaces
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status >= 500 and self.hold():
                self.held = True
                return
        await self._send(message)


def never() -> bool:
    """The ``hold`` of an answer that is never held back."""
    return False


# The records with a traceback logged while a canary view that may fall back runs;
# None outside one. A list, so a view's thread (which runs in a copy of the context)
# adds to the same one.
Held = list[logging.LogRecord]
_held_records: contextvars.ContextVar[Held | None] = contextvars.ContextVar(
    "bridge_canary_held_records", default=None
)


class HeldRecords(logging.Filter):
    """On the "bridge" logger: an error logged while a canary view that may fall back runs
    (the view's exception, logged where views are served) waits, so that each fallback is
    logged once, with that traceback; if the view's answer stands, it goes out as it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _held_records.get()
        if held is None or not record.exc_info:
            return True
        held.append(record)
        return False


HOLD = HeldRecords()


def hold_records() -> tuple[Held, contextvars.Token[Held | None]]:
    """Start holding this context's error records; give the token to ``release_records``."""
    held: Held = []
    return held, _held_records.set(held)


def release_records(token: contextvars.Token[Held | None]) -> None:
    _held_records.reset(token)
