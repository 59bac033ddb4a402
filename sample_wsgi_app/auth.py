"""Logging in and out, and the guard that sends anonymous visitors to the login page."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec
from urllib.parse import urlencode

from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from sample_wsgi_app import queries
from sample_wsgi_app.db import Database
from sample_wsgi_app.passwords import hash_password, verify_password
from sample_wsgi_app.queries import User
from sample_wsgi_app.request import SampleRequest
from sample_wsgi_app.sessions import (
    CSRF_SESSION_KEY,
    GENERATION_SESSION_KEY,
    USER_ID_SESSION_KEY,
)

P = ParamSpec("P")
View = Callable[Concatenate[SampleRequest, P], Response]


@functools.cache
def _unknown_user_hash() -> str:
    # Checked when the username is unknown, so a failed login takes as long
    # either way and the response time does not reveal which usernames exist.
    return hash_password(secrets.token_urlsafe(16))


def authenticate(db: Database, username: str, password: str) -> User | None:
    """Return the user if the password is right, else None."""
    found = queries.get_user_credentials(db, username)
    if found is None:
        verify_password(password, _unknown_user_hash())
        return None
    user, stored = found
    return user if verify_password(password, stored) else None


def log_in(session: dict[str, Any], user: User) -> None:
    """Start a fresh session for `user`.

    Dropping the old contents (and CSRF token) means a session planted before
    login is worth nothing after it.
    """
    session.clear()  # the issue time goes too: the cookie saved next is stamped now
    session[USER_ID_SESSION_KEY] = user.id
    session[GENERATION_SESSION_KEY] = user.session_generation
    session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)


def log_out(db: Database, session: dict[str, Any]) -> None:
    """End the session, and every other session of its user issued before now.

    A signed cookie cannot be recalled, so the user's session generation is raised
    in the database: a cookie saved before this moment, copied or stolen, names the
    old generation and no longer logs anyone in. The middleware deletes this one.
    """
    user_id = session.get(USER_ID_SESSION_KEY)
    if isinstance(user_id, int):
        queries.end_sessions(db, user_id)
    session.clear()


def session_user(db: Database, session: dict[str, Any]) -> User | None:
    """The user `session` logs in, or None: the account must exist and the session
    must carry the user's current generation (logout raises it)."""
    user_id = session.get(USER_ID_SESSION_KEY)
    generation = session.get(GENERATION_SESSION_KEY)
    if not isinstance(user_id, int) or not isinstance(generation, int):
        return None
    user = queries.get_user(db, user_id)
    if user is None or user.session_generation != generation:
        return None
    return user


def safe_next_url(target: str | None, default: str = "/items") -> str:
    """Return `target` if it is a path on this site, else `default`.

    `//host` and `/\\host` are refused: browsers read both as another host.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(char in target for char in "\r\n\t"):
        return default
    return target


def login_url(request: SampleRequest) -> str:
    """The login page, with `next` set to come back here after a GET."""
    if request.method in ("GET", "HEAD"):
        query = request.query_string.decode("latin-1")
        here = f"{request.path}?{query}" if query else request.path
    else:
        # A form post cannot be replayed by a redirect after login; return to
        # the page that held the form when it is on this site.
        referrer = request.referrer or ""
        here = "/items"
        if referrer.startswith(request.host_url):
            here = safe_next_url("/" + referrer.removeprefix(request.host_url))
    return f"/login?{urlencode({'next': here})}"


def login_required(view: View[P]) -> View[P]:
    """Let a page view run only for a logged-in user; others are redirected to log in."""

    @functools.wraps(view)
    def guarded(request: SampleRequest, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        if request.user is None:
            return redirect(login_url(request), code=303)
        return view(request, *args, **kwargs)

    return guarded
