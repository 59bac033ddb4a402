"""Signed-cookie sessions that sync views and async routes read the same way.

The session is a JSON object kept in the cookie ``sample_session``::

    sample_session=<payload>.<signature>

    payload   = base64url(UTF-8 JSON of the session dict, compact, keys sorted)
    signature = base64url(HMAC-SHA256(key = secret as UTF-8, message = payload as ASCII))

Both parts are base64url without ``=`` padding. The cookie is signed, not
encrypted: anyone holding it can read it, nobody without the secret can change
it. A value that is missing, malformed, signed with another secret, or issued more
than ``SESSION_MAX_AGE`` ago loads as an empty session: the age is checked here, on
the server, since a browser's Max-Age is only a request. The keys this application
uses are ``issued_at`` (int, Unix time the session was first saved), ``user_id`` and
``generation`` (ints, set at login: the user's session generation then, which logout
raises, so every cookie issued before a logout stops working; see ``auth``) and
``csrf_token`` (str, created when a form is first rendered).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

SESSION_COOKIE = "sample_session"
CSRF_SESSION_KEY = "csrf_token"
USER_ID_SESSION_KEY = "user_id"
GENERATION_SESSION_KEY = "generation"
ISSUED_SESSION_KEY = "issued_at"
SESSION_MAX_AGE = 14 * 24 * 3600  # two weeks, Django's default session age
# A session "issued" further ahead than this was not issued by this clock.
CLOCK_SKEW = 60


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # validate=True refuses stray characters instead of silently skipping them.
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _signature(payload: str, secret: str | bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return _b64encode(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def canonical_json(data: Mapping[str, Any]) -> str:
    """Serialise a session the one way the cookie format allows."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def dump_session(data: Mapping[str, Any], secret: str | bytes) -> str:
    """Return the signed cookie value holding `data`, stamped with its issue time
    (now, unless `data` already carries one)."""
    if ISSUED_SESSION_KEY not in data:
        data = {**data, ISSUED_SESSION_KEY: int(time.time())}
    payload = _b64encode(canonical_json(data).encode())
    return f"{payload}.{_signature(payload, secret)}"


def load_session(
    cookie_value: str | None, secret: str | bytes, max_age: int = SESSION_MAX_AGE
) -> dict[str, Any]:
    """Return the session in a cookie value, or an empty dict if it does not verify
    or was issued more than `max_age` seconds ago."""
    if not cookie_value or not cookie_value.isascii():
        return {}
    payload, dot, signature = cookie_value.rpartition(".")
    if not dot or not hmac.compare_digest(signature, _signature(payload, secret)):
        return {}
    try:
        data = json.loads(_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    issued = data.get(ISSUED_SESSION_KEY)
    if not isinstance(issued, int) or isinstance(issued, bool):
        return {}  # no issue time: it cannot be shown to be young enough
    if not -CLOCK_SKEW <= time.time() - issued <= max_age:
        return {}
    return data


def csrf_token(session: dict[str, Any]) -> str:
    """Return the session's CSRF token, creating one the first time a form needs it."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token
