"""WSGI middleware, each a class wrapping an application: logging, error pages,
sessions, the current user, and CSRF protection.

`create_app` stacks them, outermost first::

    RequestLogMiddleware → ErrorPageMiddleware → SessionMiddleware
        → AuthMiddleware → CSRFMiddleware → SampleApp.dispatch

None of them wraps a `wsgi.file_wrapper` body in an iterator of its own: that
would hide the file from a server that can send it without reading it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.http import dump_cookie, parse_cookie, parse_options_header
from werkzeug.wsgi import FileWrapper

from sample_wsgi_app import templates
from sample_wsgi_app.api import json_error
from sample_wsgi_app.auth import session_user
from sample_wsgi_app.db import Database
from sample_wsgi_app.request import SESSION_KEY, USER_KEY, SampleRequest
from sample_wsgi_app.sessions import (
    CSRF_SESSION_KEY,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    USER_ID_SESSION_KEY,
    canonical_json,
    dump_session,
    load_session,
)
from sample_wsgi_app.views import render

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("sample_wsgi_app")

CSRF_FIELD = "csrf_token"
CSRF_HEADER_ENVIRON = "HTTP_X_CSRF_TOKEN"  # the X-CSRF-Token request header
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def is_file_wrapper(environ: WSGIEnvironment, body: Iterable[bytes]) -> bool:
    """Tell whether `body` is the server's `wsgi.file_wrapper` (or werkzeug's stand-in)."""
    server_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(server_wrapper, type) and isinstance(body, server_wrapper):
        return True
    return isinstance(body, FileWrapper)


class ResponseBody:
    """Iterates a response body for a middleware, and closes it exactly once.

    Args:
        body: the wrapped application's iterable; its `close()` is called on close.
        on_close: called after that with the number of bytes produced.
        on_error: called with an exception raised mid-iteration; returns the
            replacement body or raises. Without it, the exception propagates.
    """

    def __init__(
        self,
        body: Iterable[bytes],
        on_close: Callable[[int], None] | None = None,
        on_error: Callable[[Exception], Iterable[bytes]] | None = None,
    ) -> None:
        self._body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._on_close = on_close
        self._on_error = on_error
        self._bytes = 0
        self._closed = False

    def __iter__(self) -> ResponseBody:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise
        except Exception as exc:
            if self._on_error is None:
                raise
            self._chunks = iter(self._on_error(exc))
            self._on_error = None  # a second failure, in the error body, propagates
            chunk = next(self._chunks)
        self._bytes += len(chunk)
        return chunk

    def close(self) -> None:
        """Close the wrapped body, then report; repeated calls do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                self._on_close(self._bytes)


class RequestLogMiddleware:
    """Logs one INFO line per request on `sample_wsgi_app` once its response is closed.

    The line reads `GET /items?page=2 200 5120 bytes 3.1 ms`; the time runs
    until the server closed the body, so it includes streaming.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        status = "-"
        length = "-"
        query = environ.get("QUERY_STRING", "")
        target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
        method = environ.get("REQUEST_METHOD", "-")

        def logging_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal status, length
            status = status_line.split(" ", 1)[0]
            length = next((v for k, v in headers if k.lower() == "content-length"), "-")
            return start_response(status_line, headers, exc_info)

        def log(sent: int | str) -> None:
            elapsed = (time.perf_counter() - started) * 1000
            logger.info("%s %s %s %s bytes %.1f ms", method, target, status, sent, elapsed)

        try:
            body = self.app(environ, logging_start_response)
        except BaseException:
            status = "500"
            log("-")
            raise
        if is_file_wrapper(environ, body):
            log(length)
            return body
        return ResponseBody(body, on_close=log)


class ErrorPageMiddleware:
    """Turns an unhandled exception into a 500 page that shows only an error id.

    The traceback goes to the `sample_wsgi_app` logger with the same id. Under
    `/api/` the page is JSON. An error after the headers went out cannot be
    turned into a page; it propagates so the server aborts the response.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = False

        def tracking_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal started
            write = start_response(status, headers, exc_info)
            started = True
            return write

        def error_page(exc: BaseException) -> list[bytes]:
            error_id = secrets.token_hex(6)
            logger.error(
                "Unhandled error %s in %s %s",
                error_id,
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                exc_info=exc,
            )
            if environ.get("PATH_INFO", "").startswith("/api/"):
                response = json_error(500, f"Internal server error, reference {error_id}.")
                body = response.get_data()
                content_type = response.content_type or "application/json"
            else:
                body = templates.server_error(error_id).encode()
                content_type = "text/html; charset=utf-8"
            headers = [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ]
            # PEP 3333: start_response may be called again only with exc_info,
            # and "will re-raise the exception" if headers were already sent.
            if started:
                # Always called from an except block, so this is `exc` in flight.
                start_response("500 Internal Server Error", headers, sys.exc_info())
            else:
                start_response("500 Internal Server Error", headers)
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

        try:
            body = self.app(environ, tracking_start_response)
        except Exception as exc:
            return error_page(exc)
        if is_file_wrapper(environ, body):
            return body
        return ResponseBody(body, on_error=error_page)


class SessionMiddleware:
    """Loads the signed session cookie into `environ["sample.session"]` and saves changes.

    Args:
        app: the application to wrap.
        secret: the key that signs the cookie (see `sessions` for the format).
        max_age: seconds a session lives from its issue time, checked here, and the
            cookie's Max-Age; two weeks by default.
    """

    def __init__(self, app: WSGIApplication, secret: str, max_age: int = SESSION_MAX_AGE) -> None:
        self.app = app
        self.secret = secret
        self.max_age = max_age

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        cookie = parse_cookie(environ).get(SESSION_COOKIE)
        session = load_session(cookie, self.secret, self.max_age)
        environ[SESSION_KEY] = session
        # What the browser holds now: nothing, a valid session, or a bad cookie
        # (which is then deleted, so it is not sent again).
        held = canonical_json(session) if session else ("<invalid>" if cookie else None)

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            current: dict[str, Any] = environ[SESSION_KEY]
            if (canonical_json(current) if current else None) != held:
                headers = [*headers, ("Set-Cookie", self._cookie(environ, current))]
            return start_response(status, headers, exc_info)

        return self.app(environ, session_start_response)

    def _cookie(self, environ: WSGIEnvironment, session: dict[str, Any]) -> str:
        value = dump_session(session, self.secret) if session else ""
        return dump_cookie(
            SESSION_COOKIE,
            value,
            max_age=self.max_age if session else 0,
            path="/",
            secure=environ.get("wsgi.url_scheme") == "https",
            httponly=True,
            samesite="Lax",
        )


class AuthMiddleware:
    """Puts the logged-in user (a `queries.User`, or None) in `environ["sample.user"]`.

    Args:
        app: the application to wrap.
        db: where users are looked up by the session's `user_id`.
    """

    def __init__(self, app: WSGIApplication, db: Database) -> None:
        self.app = app
        self.db = db

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        session: dict[str, Any] = environ.setdefault(SESSION_KEY, {})
        user = session_user(self.db, session)
        if user is None and session.get(USER_ID_SESSION_KEY) is not None:
            # The account is gone, or the user logged out since: the session must not
            # outlive either, so the cookie is deleted.
            session.clear()
        environ[USER_KEY] = user
        return self.app(environ, start_response)


class CSRFMiddleware:
    """Refuses unsafe requests that do not prove they come from this site's pages (403).

    A form post must carry the session's token in the field `csrf_token` (or the
    header `X-CSRF-Token`). Any other unsafe request that comes with a session
    cookie must send the header; without a session it carries no authority to
    abuse, and the view decides (the API answers 401).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in UNSAFE_METHODS:
            return self.app(environ, start_response)
        session: dict[str, Any] = environ.setdefault(SESSION_KEY, {})
        submitted = environ.get(CSRF_HEADER_ENVIRON)
        mimetype, _options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        # Media types are case-insensitive (RFC 9110 8.3.1), and werkzeug parses
        # "Application/X-WWW-Form-Urlencoded" as a form: compare them the same way.
        mimetype = mimetype.lower()
        if mimetype in FORM_TYPES and not submitted:
            # The view reads the same request, so the form is parsed only once.
            request = SampleRequest.from_environ(environ)
            try:
                submitted = request.form.get(CSRF_FIELD)
            except HTTPException as exc:  # for example 413, an upload over the limit
                request.close()
                return exc(environ, start_response)
        elif mimetype not in FORM_TYPES and not session:
            return self.app(environ, start_response)
        if _tokens_match(session.get(CSRF_SESSION_KEY), submitted):
            return self.app(environ, start_response)
        request = SampleRequest.from_environ(environ)
        request.close()  # removes the temporary files of a refused upload
        logger.warning("CSRF check failed for %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            response = json_error(403, "Send the session's CSRF token in the X-CSRF-Token header.")
        else:
            message = "The form has expired or did not come from this site. Reload it and retry."
            page = templates.error(403, "Forbidden", message)
            response = render(request, "Forbidden", page, status=403)
        return response(environ, start_response)


def _tokens_match(expected: object, submitted: object) -> bool:
    if not isinstance(expected, str) or not isinstance(submitted, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())
