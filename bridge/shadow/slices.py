"""JSON parsed in slices, so a thread parsing a large body gives the event loop its turns.

``json.loads`` is one C call: on 1 MiB it holds the GIL for tens of milliseconds,
and a thread that makes it stops the event loop as surely as the loop making it
itself. Here a document is parsed by the same C decoder one piece at a time: a
container that ends within ``WINDOW`` characters is one call; a larger one is taken
element by element (its keys and scalars each one call), and between calls the
interpreter hands the GIL over as usual (every 5 ms, ``sys.getswitchinterval``).
The result is what ``json.loads`` returns, and a document that ``json.loads`` refuses
is refused with ``ValueError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Characters a container may span and still be parsed in one C call: 4 KiB of JSON
# parses in well under a tenth of a millisecond.
WINDOW = 4096

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def loads(text: str, window: int = WINDOW, decoder: json.JSONDecoder = _DECODER) -> Any:
    """``json.loads(text)``, parsed in pieces of at most ``window`` characters (a single
    scalar, such as one long string, is one piece whatever its length)."""
    value, end = _value(text, _skip(text, 0), window, decoder)
    if _skip(text, end) != len(text):
        raise ValueError(f"Extra data after the JSON document at character {end}.")
    return value


def _skip(text: str, at: int) -> int:
    found = _SPACE.match(text, at)
    return at if found is None else found.end()


def _value(text: str, at: int, window: int, decoder: json.JSONDecoder) -> tuple[Any, int]:
    """The value at ``at`` and where it ends."""
    if text[at : at + 1] not in ("{", "["):
        return decoder.raw_decode(text, at)  # a scalar: one piece
    if len(text) - at <= window:
        return decoder.raw_decode(text, at)
    try:
        # The whole container, if it closes within the window: a truncated container
        # never parses, so a success is the same value json.loads would give.
        value, end = decoder.raw_decode(text[at : at + window])
        return value, at + end
    except ValueError:
        return _container(text, at, window, decoder)


def _container(text: str, at: int, window: int, decoder: json.JSONDecoder) -> tuple[Any, int]:
    """A container larger than the window, element by element."""
    is_object = text[at] == "{"
    closing = "}" if is_object else "]"
    found: Any = {} if is_object else []
    at = _skip(text, at + 1)
    if text[at : at + 1] == closing:
        return found, at + 1
    while True:
        if is_object:
            if text[at : at + 1] != '"':
                raise ValueError(f"Expecting a property name at character {at}.")
            key, at = decoder.raw_decode(text, at)
            at = _skip(text, at)
            if text[at : at + 1] != ":":
                raise ValueError(f"Expecting ':' at character {at}.")
            value, at = _value(text, _skip(text, at + 1), window, decoder)
            found[key] = value
        else:
            value, at = _value(text, at, window, decoder)
            found.append(value)
        at = _skip(text, at)
        mark = text[at : at + 1]
        if mark == closing:
            return found, at + 1
        if mark != ",":
            raise ValueError(f"Expecting ',' or '{closing}' at character {at}.")
        at = _skip(text, at + 1)
