"""Compare the legacy app's response with a shadow view's: status, chosen headers, body.

Pure functions, no I/O. Bodies are decoded by their Content-Type before they are
compared: JSON is parsed and compared as a structure (key order and whitespace do
not count, ``true`` is not ``1``), text is compared as text, anything else as bytes.
A route's normaliser sees the decoded body of each side and returns what should be
compared, so it can mask a timestamp, a CSRF token or an order that does not matter.

Every value that leaves this module (a ``Difference``, a ``kept`` response) is
truncated, and the values of ``Cookie``, ``Authorization`` and ``Set-Cookie`` are
replaced: a mismatch report is shown on the dashboard and must not carry secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._types import RawHeaders

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

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "legacy": self.legacy, "shadow": self.shadow}


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
            return json.loads(response.body)
        except ValueError:
            pass  # not JSON after all: compared as text
    if is_json(kind) or kind.startswith("text/") or kind.endswith(("xml", "javascript")):
        try:
            return response.body.decode(charset, errors="replace")
        except LookupError:
            return response.body.decode("utf-8", errors="replace")
    return response.body


def compare(
    legacy: Captured,
    shadow: Captured,
    headers: Iterable[str] = ("content-type",),
    normalise: Normaliser | None = None,
) -> list[Difference]:
    """Every difference between the two responses (at most ``MAX_DIFFERENCES``, then a
    count); an empty list means they match. ``normalise`` may raise: the caller counts
    that as a failed shadow run."""
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
    old_body, new_body = decode_body(legacy), decode_body(shadow)
    if normalise is not None:
        old_body, new_body = normalise(old_body), normalise(new_body)
    body: list[Difference] = []
    _diff(old_body, new_body, "$", body)
    if len(body) > MAX_DIFFERENCES:
        extra = len(body) - MAX_DIFFERENCES
        body = body[:MAX_DIFFERENCES]
        body.append(Difference("body", f"... and {extra} more differences", ""))
    return found + body


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else truncate(value)


def _json(value: Any) -> str:
    try:
        return truncate(json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr))
    except (TypeError, ValueError):
        return truncate(repr(value))


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
    return bool(a == b)


def _diff(a: Any, b: Any, path: str, out: list[Difference]) -> None:
    """Append where ``a`` and ``b`` differ; stops one past the limit (enough to know
    there were more)."""
    if len(out) > MAX_DIFFERENCES:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            where = _child(path, key)
            if key not in b:
                out.append(Difference(_body(where), _json(a[key]), "(absent)"))
            elif key not in a:
                out.append(Difference(_body(where), "(absent)", _json(b[key])))
            else:
                _diff(a[key], b[key], where, out)
            if len(out) > MAX_DIFFERENCES:
                return
    elif isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            where = _child(path, index)
            if index >= len(b):
                out.append(Difference(_body(where), _json(a[index]), "(absent)"))
            elif index >= len(a):
                out.append(Difference(_body(where), "(absent)", _json(b[index])))
            else:
                _diff(a[index], b[index], where, out)
            if len(out) > MAX_DIFFERENCES:
                return
    elif path == "$" and type(a) is type(b) and isinstance(a, (str, bytes)):
        if a != b:  # a whole text or binary body
            out.append(_text_difference(a, b))
    elif not _same(a, b):
        out.append(Difference(_body(path), _json(a), _json(b)))


def _body(path: str) -> str:
    return "body" if path == "$" else f"body {path}"


def _text_difference(a: str | bytes, b: str | bytes) -> Difference:
    """Where two texts first differ (line and column), with a little of each around it."""
    limit = min(len(a), len(b))
    at = next((i for i in range(limit) if a[i] != b[i]), limit)
    start = max(at - CONTEXT_CHARS, 0)
    head = a[:at]
    newline: Any = "\n" if isinstance(head, str) else b"\n"
    line = head.count(newline) + 1
    column = at - (head.rfind(newline) + 1) + 1

    def window(text: str | bytes) -> str:
        part = text[start : at + CONTEXT_CHARS]
        shown = part if isinstance(part, str) else repr(part)[2:-1]
        prefix = "..." if start else ""
        suffix = "..." if at + CONTEXT_CHARS < len(text) else ""
        return truncate(prefix + shown + suffix)

    where = f"body line {line} col {column}" if isinstance(a, str) else f"body byte {at}"
    return Difference(where, window(a), window(b))


def kept(response: Captured, body_chars: int) -> dict[str, Any]:
    """A response as a mismatch report keeps it: secret header values replaced, every
    value and the body truncated."""
    headers = []
    for name, value in response.headers[:30]:
        key = bytes(name).decode("latin-1").lower()
        shown = REDACTED if key in SECRET_HEADERS else truncate(bytes(value).decode("latin-1"))
        headers.append([key, shown])
    raw = response.body
    body = raw[: body_chars * 4].decode("utf-8", errors="replace")
    if len(body) > body_chars or len(raw) > body_chars * 4:
        body = body[:body_chars] + f"... ({len(raw)} bytes)"
    return {"status": response.status, "headers": headers, "body": body}
