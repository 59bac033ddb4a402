"""Signed-cookie sessions that sync views and async routes read the same way.

The session is a JSON object kept in the cookie ``sample_session``::

    sample_session=<payload>.<signature>

    payload   = base64url(UTF-8 JSON of the session dict, compact, keys sorted)
    signature = base64url(HMAC-SHA256(key = secret as UTF-8, message = payload as ASCII))

Both parts are base64url without ``=`` padding. The cookie is signed, not
encrypted: anyone holding it can read it, nobody without the secret can change
it. A value that is missing, malformed, or signed with another secret loads as
an empty session. The keys this application uses are ``user_id`` (int, set at
login) and ``csrf_token`` (str, created when a form is first rendered).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

SESSION_COOKIE = "sample_session"
CSRF_SESSION_KEY = "csrf_token"
USER_ID_SESSION_KEY = "user_id"


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
    """Return the signed cookie value holding `data`."""
    payload = _b64encode(canonical_json(data).encode())
    return f"{payload}.{_signature(payload, secret)}"


def load_session(cookie_value: str | None, secret: str | bytes) -> dict[str, Any]:
    """Return the session in a cookie value, or an empty dict if it does not verify."""
    if not cookie_value or not cookie_value.isascii():
        return {}
    payload, dot, signature = cookie_value.rpartition(".")
    if not dot or not hmac.compare_digest(signature, _signature(payload, secret)):
        return {}
    try:
        data = json.loads(_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def csrf_token(session: dict[str, Any]) -> str:
    """Return the session's CSRF token, creating one the first time a form needs it."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token
