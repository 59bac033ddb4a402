"""Compare the legacy app's response with a shadow view's: status, chosen headers, body.

Pure functions, no I/O. Bodies are decoded by their Content-Type before they are
compared: JSON is parsed and compared as a structure (key order and whitespace do
not count, ``true`` is not ``1``), text is compared as text, anything else as bytes.
A route's normaliser sees the decoded body of each side and returns what should be
compared, so it can mask a timestamp, a CSRF token or an order that does not matter.

Every value that leaves this module (a ``Difference``, a ``kept`` response) is
truncated, and the values of ``Cookie``, ``Authorization`` and ``Set-Cookie`` are
replaced: a mismatch report is shown on the dashboard and must not carry secrets.
Without ``show_bodies`` a body difference names its place and the kind of each value
(``a string of 12 chars``), never the value, and a kept response keeps the values of
the compared headers only.

Cost: byte-identical bodies are not decoded at all; the walk is iterative (any depth)
and spells out a place only where it finds a difference; without booleans on either
side, equal subtrees are skipped with one C comparison. The runner calls this on the
loop only for small bodies (``runner.INLINE_COMPARE``), in a thread otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from .._types import RawHeaders
from .slices import loads as sliced_loads

Normaliser = Callable[[Any], Any]

# Header fields whose values are credentials: compared, never kept.
SECRET_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})
REDACTED = "[redacted]"

# A difference shows this many characters of each side: enough to read a field,
# a line of HTML or a token, small enough that a kept report stays a few KiB.
VALUE_CHARS = 200
# A comparison lists this many differences; a body that differs everywhere says so
# in its count instead of in a list that grows with the body.
MAX_DIFFERENCES = 10
# Characters of text shown on each side of the first differing position.
CONTEXT_CHARS = 60
# Header fields a kept response lists; a response with more is cut there.
MAX_HEADERS = 30
# JSON bodies larger than this are parsed in slices: 64 KiB parses in one call in
# about a millisecond, so no single call holds the interpreter much longer.
SLICED_FROM = 64 * 1024

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Captured:
    """A response as it went to the client (or would have): status, raw headers, body."""

    status: int
    headers: RawHeaders
    body: bytes


@dataclass(frozen=True)
class Difference:
    """One way the shadow response differs: where (``status``, ``header content-type``,
    ``body $.title``) and each side's value, shown as short text."""

    where: str
    legacy: str
    shadow: str

    @property
    def kind(self) -> str:
        """What groups this difference with others of its kind: its place, with list
        indexes as ``[*]`` (``body $.items[*].price``); a status difference keeps its
        values (``status 200 -> 500``), which are the news."""
        if self.where == "status":
            return f"status {self.legacy} -> {self.shadow}"
        return _kind(self.where)

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "legacy": self.legacy, "shadow": self.shadow}


_INDEX = re.compile(r"\[\d+\]")
_TEXT_PLACE = re.compile(r"^body (line \d+ col \d+|byte \d+)$")


def _kind(where: str) -> str:
    if _TEXT_PLACE.match(where):
        return "body (text)" if where.startswith("body line") else "body (bytes)"
    return _INDEX.sub("[*]", where)


def truncate(text: str, limit: int = VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def header_value(headers: RawHeaders, name: str) -> str | None:
    """Every value of header ``name`` (lower case) joined with ", ", or None if absent."""
    wanted = name.encode("latin-1")
    values = [bytes(v).decode("latin-1") for k, v in headers if bytes(k).lower() == wanted]
    return ", ".join(values) if values else None


def media_type(headers: RawHeaders) -> tuple[str, str]:
    """The media type (lower case, no parameters) and the charset of a response."""
    value = header_value(headers, "content-type") or ""
    kind, _, rest = value.partition(";")
    charset = "utf-8"
    for parameter in rest.split(";"):
        key, _, given = parameter.strip().partition("=")
        if key.lower() == "charset" and given:
            charset = given.strip('"')
    return kind.strip().lower(), charset


def is_json(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def decode_body(response: Captured) -> Any:
    """The body as the comparison sees it: parsed JSON, text, or bytes."""
    kind, charset = media_type(response.headers)
    if is_json(kind):
        try:
            return _parse(response.body)
        except (ValueError, RecursionError):
            pass  # not JSON after all, or nested deeper than json parses: compared as text
    if is_json(kind) or kind.startswith("text/") or kind.endswith(("xml", "javascript")):
        try:
            return response.body.decode(charset, errors="replace")
        except LookupError:
            return response.body.decode("utf-8", errors="replace")
    return response.body


def _parse(body: bytes) -> Any:
    """JSON as ``json.loads`` parses it; a large body in slices (``slices.py``), so the
    thread that parses it lets the event loop run in between."""
    if len(body) <= SLICED_FROM:
        return json.loads(body)
    return sliced_loads(body.decode(json.detect_encoding(body), "surrogatepass"))


def compare(
    legacy: Captured,
    shadow: Captured,
    headers: Iterable[str] = ("content-type",),
    normalise: Normaliser | None = None,
    *,
    show_bodies: bool = True,
    noise: Collection[str] = (),
) -> list[Difference]:
    """Every difference between the two responses (at most ``MAX_DIFFERENCES``, then a
    count); an empty list means they match. ``normalise`` may raise: the caller counts
    that as a failed shadow run. Without ``show_bodies`` a body difference says where and
    what kind of value each side has, never the value. Differences whose ``kind`` is in
    ``noise`` (learned from two legacy answers) are left out."""
    found: list[Difference] = []
    if legacy.status != shadow.status:
        found.append(Difference("status", str(legacy.status), str(shadow.status)))
    for name in headers:
        old, new = header_value(legacy.headers, name), header_value(shadow.headers, name)
        if old != new:
            if name in SECRET_HEADERS:
                old = None if old is None else REDACTED
                new = None if new is None else REDACTED + " (differs)"
            found.append(Difference(f"header {name}", _shown(old), _shown(new)))
    found = [d for d in found if d.kind not in noise]
    if legacy.body == shadow.body and media_type(legacy.headers) == media_type(shadow.headers):
        return found  # the cheap exit: the same bytes decode (and normalise) the same
    old_body, new_body = decode_body(legacy), decode_body(shadow)
    if normalise is not None:
        old_body, new_body = normalise(old_body), normalise(new_body)
    # Python's == is JSON's equality but for true == 1: a shortcut only without booleans.
    # A normaliser may return booleans (or anything) of its own; and on large bodies
    # one C comparison of a large subtree would hold the GIL as json.loads does.
    small = len(legacy.body) + len(shadow.body) <= SLICED_FROM
    shortcut = (small and normalise is None and not any(
        word in body for body in (legacy.body, shadow.body) for word in (b"true", b"false")
    ))  # fmt: skip
    raw = _diff(old_body, new_body, noise, shortcut)
    body = [_difference(where, a, b, show_bodies) for where, a, b in raw[:MAX_DIFFERENCES]]
    if len(raw) > MAX_DIFFERENCES:
        body.append(Difference("body", "... and more differences", ""))
    return found + body


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else truncate(value)


def _json(value: Any) -> str:
    try:
        return truncate(json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr))
    except RecursionError:
        return describe(value) + " (nested too deep to show)"
    except (TypeError, ValueError):
        return truncate(repr(value))


def describe(value: Any) -> str:
    """What kind of value this is, without the value: what a report shows of a body
    whose route did not opt in to ``show_bodies``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} chars"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return f"a {type(value).__name__}"


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENTIFIER.match(key):
        return f"{path}.{key}"
    shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
    return f"{path}[{shown}]"


def _same(a: Any, b: Any) -> bool:
    # JSON has one number type (1 and 1.0 are the same number), but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False  # containers of one type are walked; of two types, they differ
    return bool(a == b)


_ABSENT = object()


def _diff(
    a: Any, b: Any, noise: Collection[str] = (), shortcut: bool = False
) -> list[tuple[str, Any, Any]]:
    """Where ``a`` and ``b`` differ, as (where, a's value, b's value), in document order;
    stops one past ``MAX_DIFFERENCES`` (enough to know there were more). Iterative, with
    a stack of its own, so a document of any depth is walked without recursion; a place
    is spelled out only where a difference is found. With ``shortcut`` (no booleans on
    either side, so Python's ``==`` is JSON's), equal subtrees are skipped in C."""
    out: list[tuple[str, Any, Any]] = []
    # Each item: a's value, b's value, and its place as a link (parent link, key).
    stack: list[tuple[Any, Any, Any]] = [(a, b, None)]
    pop, push = stack.pop, stack.append
    while stack and len(out) <= MAX_DIFFERENCES:
        x, y, link = pop()
        tx, ty = type(x), type(y)
        if shortcut and tx is ty and tx in _CONTAINERS:
            try:
                if x == y:
                    continue
            except RecursionError:
                pass  # deeper than C's comparison goes: walked below
        if tx is dict and ty is dict:
            for key in reversed([*x, *(k for k in y if k not in x)]):
                push((x.get(key, _ABSENT), y.get(key, _ABSENT), (link, key)))
        elif tx is list and ty is list:
            for index in range(max(len(x), len(y)) - 1, -1, -1):
                push((x[index] if index < len(x) else _ABSENT,
                      y[index] if index < len(y) else _ABSENT, (link, index)))  # fmt: skip
        elif link is None and tx is ty and tx in (str, bytes):
            if x != y:  # a whole text or binary body
                out.append(("$", x, y))
        elif x is _ABSENT or y is _ABSENT or not _same(x, y):
            path = _spelled(link)
            if not (noise and _noisy(path, noise)):
                out.append((path, x, y))
    return out


_CONTAINERS = (dict, list)


def _spelled(link: Any) -> str:
    """A place's link (parent link, key) as a path: ``$.items[3].price``."""
    keys = []
    while link is not None:
        link, key = link
        keys.append(key)
    path = "$"
    for key in reversed(keys):
        path = _child(path, key)
    return path


def _noisy(path: str, noise: Collection[str]) -> bool:
    """Whether the place, or a place that holds it, is learned noise."""
    kind = _kind(_body(path))
    return any(kind == n or kind.startswith((n + ".", n + "[")) for n in noise)


def _difference(path: str, a: Any, b: Any, show: bool) -> Difference:
    if path == "$" and type(a) is type(b) and isinstance(a, (str, bytes)):
        return _text_difference(a, b, show)

    def shown(value: Any) -> str:
        if value is _ABSENT:
            return "(absent)"
        return _json(value) if show else describe(value)

    return Difference(truncate(_body(path)), shown(a), shown(b))


def _body(path: str) -> str:
    return "body" if path == "$" else f"body {path}"


def first_difference(a: str | bytes, b: str | bytes) -> int:
    """The index of the first item where ``a`` and ``b`` differ (the shorter length if
    one is a prefix of the other): 4 KiB slices compared in turn (each a memcmp), then a
    binary search inside the first that differs, instead of a Python loop per character."""
    limit = min(len(a), len(b))
    low = 0
    while low < limit and a[low : low + 4096] == b[low : low + 4096]:
        low += 4096
    high = min(low + 4096, limit)
    while low < high:  # a[:low] == b[:low] throughout
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _text_difference(a: str | bytes, b: str | bytes, show: bool = True) -> Difference:
    """Where two texts first differ (line and column), with a little of each around it."""
    at = first_difference(a, b)
    start = max(at - CONTEXT_CHARS, 0)
    head = a[:at]
    newline: Any = "\n" if isinstance(head, str) else b"\n"
    line = head.count(newline) + 1
    column = at - (head.rfind(newline) + 1) + 1

    def window(text: str | bytes) -> str:
        if not show:
            return describe(text)
        part = text[start : at + CONTEXT_CHARS]
        shown = part if isinstance(part, str) else repr(part)[2:-1]
        prefix = "..." if start else ""
        suffix = "..." if at + CONTEXT_CHARS < len(text) else ""
        return truncate(prefix + shown + suffix)

    where = f"body line {line} col {column}" if isinstance(a, str) else f"body byte {at}"
    return Difference(where, window(a), window(b))


def kept(
    response: Captured,
    body_chars: int,
    headers: Collection[str] = ("content-type",),
    show_bodies: bool = True,
) -> dict[str, Any]:
    """A response as a mismatch report keeps it: the values of the compared headers
    (credentials replaced), only the names of the others, and the body, truncated,
    only with ``show_bodies``."""
    shown: list[list[str]] = []
    others: list[str] = []
    for name, value in response.headers[:MAX_HEADERS]:
        key = bytes(name).decode("latin-1").lower()
        if key not in headers:
            others.append(truncate(key))
        elif key in SECRET_HEADERS:
            shown.append([key, REDACTED])
        else:
            shown.append([key, truncate(bytes(value).decode("latin-1"))])
    raw = response.body
    return {
        "status": response.status,
        "headers": shown,
        "other_headers": others,
        "body": kept_body(raw, body_chars) if show_bodies else None,
        "body_bytes": len(raw),
    }


def kept_body(raw: bytes, body_chars: int) -> str:
    """A body as text for a report: its first ``body_chars`` characters, and its size
    when it is longer."""
    body = raw[: body_chars * 4].decode("utf-8", errors="replace")
    if len(body) > body_chars or len(raw) > body_chars * 4:
        body = body[:body_chars] + f"... ({len(raw)} bytes)"
    return body
