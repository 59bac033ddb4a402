"""Response status and header rules: what a WSGI application may send, as ASGI bytes.

Pure functions, no I/O: the status line is parsed, each header validated (RFC 9110
tokens, no CR/LF/NUL, latin-1 only), hop-by-hop fields dropped, and the
Content-Length read, once, where the response starts.
"""

from __future__ import annotations

import re

from .._types import RawHeaders
from ..errors import ResponseError

# RFC 9110 7.6.1 hop-by-hop fields. PEP 3333: "Applications and middleware are
# forbidden from using HTTP/1.1 'hop-by-hop' features or headers"; the ASGI server
# frames the response itself, so these are dropped rather than passed on.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

# RFC 9110 5.1: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_STATUS = re.compile(r"([1-9][0-9][0-9])(?: (.*))?\Z", re.DOTALL)


def parse_status(status: object) -> int:
    """Return the status code of a WSGI status line such as ``"200 OK"``.

    A missing reason phrase (``"200"``) is accepted, as gunicorn accepts it; anything
    else that is not a three-digit code is refused.
    """
    code = _STATUS_CODES.get(status) if type(status) is str else None
    if code is not None:
        return code
    if not isinstance(status, str):
        raise ResponseError(f"The status must be a str such as '200 OK', not {status!r}.")
    match = _STATUS.match(status)
    if match is None or "\r" in status or "\n" in status:
        raise ResponseError(f"The status {status!r} is not a three-digit code and a reason.")
    code = int(match.group(1))
    if len(_STATUS_CODES) < _MAX_CACHED:
        _STATUS_CODES[status] = code
    return code


# Status lines and header names an application sent before, already checked: an app
# sends the same few on every response, and checking them was most of start_response.
# Bounded, since an app may put request data in them: past the bound, each is checked
# every time.
_MAX_CACHED = 512
_STATUS_CODES: dict[str, int] = {}
_NAMES: dict[str, bytes] = {}  # a valid name -> its lowercased bytes


def _raw_name(name: str) -> bytes:
    """The ASGI form of a response header name, checked once and then remembered."""
    raw_name = _NAMES.get(name)
    if raw_name is None:
        if not _TOKEN.match(name):
            raise ResponseError(f"The response header name {name!r} is not a valid HTTP token.")
        raw_name = name.lower().encode("latin-1")
        if len(_NAMES) < _MAX_CACHED:
            _NAMES[name] = raw_name
    return raw_name


def _raw_value(name: str, value: str) -> bytes:
    """A response header value as latin-1 bytes, refused if it could split the response."""
    if value.isascii() and value.isprintable():
        return value.encode("ascii")  # the common case: nothing to refuse in it
    if "\r" in value or "\n" in value or "\0" in value:
        raise ResponseError(
            f"The value of the response header {name!r} contains CR, LF or NUL, "
            "which would split the response; remove them."
        )
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ResponseError(
            f"The value of the response header {name!r} is not latin-1; "
            "encode it (for example RFC 8187 or percent-encoding) first."
        ) from None


def encode_headers(headers: object) -> tuple[RawHeaders, int | None]:
    """Validate WSGI response headers; return them as ASGI bytes and the Content-Length.

    PEP 3333 asks for "a list of (header_name, header_value) tuples", but gunicorn,
    waitress and asgiref take any sequence of two-item sequences (``[["X-A", "1"]]``,
    a tuple of tuples), and real apps send them: so does bridge. The name and value
    themselves are held to the rules.
    """
    if not isinstance(headers, (list, tuple)):
        raise ResponseError(
            f"The response headers must be a list of (name, value) tuples, not {headers!r}."
        )
    raw: RawHeaders = []
    content_length: int | None = None
    names = _NAMES
    for item in headers:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ResponseError(f"A response header must be a (name, value) tuple, not {item!r}.")
        name, value = item
        # The common case inline, with no call: a remembered name (only str names are)
        # and a value of printable ASCII, which cannot hold CR, LF or NUL.
        raw_name = names.get(name) if type(name) is str else None
        if raw_name is not None and type(value) is str and value.isascii() and value.isprintable():
            raw_value = value.encode("ascii")
        else:
            if not (isinstance(name, str) and isinstance(value, str)):
                raise ResponseError(f"The response header {item!r} must have a str name and value.")
            raw_name = _raw_name(name)
            raw_value = _raw_value(name, value)
        if raw_name in HOP_BY_HOP:
            continue
        if raw_name == b"content-length":
            if not value.strip().isdigit():
                raise ResponseError(f"The Content-Length {value!r} is not a whole number.")
            length = int(value)
            if content_length is not None and content_length != length:
                raise ResponseError("The response has two different Content-Length headers.")
            if content_length is not None:
                continue
            content_length = length
        raw.append((raw_name, raw_value))
    return raw, content_length
