"""An object that an ``await`` drives step by step, in place of a suspended coroutine.

A connection that stays open for hours (an SSE stream, a websocket) keeps whatever
serves it for as long as it is open. A coroutine that awaits another keeps its frame
(0.3-0.6 KiB); a slotted object that passes each step on to the coroutine it wraps
keeps a few pointers. ``Stepper`` is the protocol an ``await`` speaks to such an
object; a subclass says what one step does (``_step``) and how it is closed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


class Stepper:
    """Drives ``_step`` as an ``await`` drives a coroutine: CPython sends ``None``
    through ``__next__``, any other value through ``send``, and passes ``throw`` on."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # type: ignore[return-value]  # an iterator that an await drives

    def __iter__(self) -> Stepper:
        return self

    def __next__(self) -> Any:
        return self._step(None, None)

    def send(self, value: Any) -> Any:
        return self._step(value, None)

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        # A cancellation, thrown into the wrapped coroutine as its next step.
        if value is None:
            value = typ() if isinstance(typ, type) else typ
        return self._step(None, value)

    def _step(self, value: Any, error: BaseException | None) -> Any:
        """One step: send ``value``, or throw ``error``, into what this object drives."""
        raise NotImplementedError
