"""The legacy session and user, read (and written) from async code without the middleware.

The session is a signed cookie (format in `sessions`): verifying it is a few
microseconds of CPU, so it runs on the event loop and no thread is taken. Only the
user lookup needs the database; it holds a thread for that one query, not for the
whole view, and anonymous visitors need none. Code here skips the legacy middleware,
so a view that changes state checks the CSRF token itself (`csrf_ok`).
"""

from __future__ import annotations

import hmac
from typing import Any

from asgiref.sync import sync_to_async
from werkzeug.http import dump_cookie
from werkzeug.wrappers import Request, Response

from sample_wsgi_app import auth
from sample_wsgi_app.db import Database
from sample_wsgi_app.queries import User
from sample_wsgi_app.sessions import (
    CSRF_SESSION_KEY,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    USER_ID_SESSION_KEY,
    dump_session,
    load_session,
)


def read_session(request: Request, secret: str | None) -> dict[str, Any]:
    """The session the legacy `SessionMiddleware` would load for this request: empty if
    it does not verify or is older than `SESSION_MAX_AGE`, or if there is no key."""
    if secret is None:
        return {}  # no key, no sessions: see settings
    return load_session(request.cookies.get(SESSION_COOKIE), secret)


async def current_user(session: dict[str, Any], db: Database) -> User | None:
    """The logged-in user of `session`, as `AuthMiddleware` finds it, or None: the same
    check (`auth.session_user`), so a session from before a logout is refused here too."""
    if not isinstance(session.get(USER_ID_SESSION_KEY), int):
        return None
    # thread_sensitive=False: one read needs no particular thread, and the loop's
    # default executor keeps its threads, so their per-thread connections are reused.
    return await sync_to_async(auth.session_user, thread_sensitive=False)(db, session)


async def log_out(session: dict[str, Any], db: Database) -> None:
    """End `session` and every other session of its user, as the legacy logout does."""
    await sync_to_async(auth.log_out, thread_sensitive=False)(db, session)


def csrf_ok(request: Request, session: dict[str, Any]) -> bool:
    """Tell whether the request carries the session's CSRF token in `X-CSRF-Token`."""
    expected = session.get(CSRF_SESSION_KEY)
    submitted = request.headers.get("X-CSRF-Token")
    if not isinstance(expected, str) or not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def save_session(
    response: Response, request: Request, session: dict[str, Any], secret: str
) -> None:
    """Set the session cookie on `response` (or delete it when the session is empty),
    with the attributes `SessionMiddleware` gives it."""
    value = dump_session(session, secret) if session else ""
    cookie = dump_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE if session else 0,
        path="/",
        secure=request.scheme == "https",
        httponly=True,
        samesite="Lax",
    )
    response.headers.add("Set-Cookie", cookie)
