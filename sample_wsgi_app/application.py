"""Wiring: the URL map, the view table, and the middleware stack around them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response

from sample_wsgi_app import api, views
from sample_wsgi_app.db import Database
from sample_wsgi_app.middleware import (
    AuthMiddleware,
    CSRFMiddleware,
    ErrorPageMiddleware,
    RequestLogMiddleware,
    SessionMiddleware,
)
from sample_wsgi_app.request import DB_KEY, SETTINGS_KEY, SampleRequest
from sample_wsgi_app.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("sample_wsgi_app")

GET = ["GET"]  # werkzeug adds HEAD to every rule that allows GET
GET_POST = ["GET", "POST"]
POST = ["POST"]

URL_MAP = Map(
    [
        Rule("/", endpoint="index", methods=GET),
        Rule("/items", endpoint="item_list", methods=GET),
        Rule("/items/new", endpoint="item_new", methods=GET_POST),
        Rule("/items/<int:item_id>", endpoint="item_detail", methods=GET),
        Rule("/items/<int:item_id>/edit", endpoint="item_edit", methods=GET_POST),
        Rule("/items/<int:item_id>/delete", endpoint="item_delete", methods=POST),
        Rule("/items/<int:item_id>/attachments", endpoint="attachment_upload", methods=POST),
        Rule("/attachments/<int:attachment_id>", endpoint="attachment_download", methods=GET),
        Rule("/login", endpoint="login", methods=GET_POST),
        Rule("/logout", endpoint="logout", methods=POST),
        Rule("/export.csv", endpoint="export_csv", methods=GET),
        Rule("/report", endpoint="report", methods=GET),
        Rule("/health", endpoint="health", methods=GET),
        Rule("/api/session", endpoint="api_session", methods=GET),
        Rule("/api/items", endpoint="api_item_list", methods=GET),
        Rule("/api/items", endpoint="api_item_create", methods=POST),
        Rule("/api/items/<int:item_id>", endpoint="api_item_detail", methods=GET),
    ]
)

View = Callable[..., Response]

VIEWS: dict[str, View] = {
    "index": views.index,
    "item_list": views.item_list,
    "item_new": views.item_new,
    "item_detail": views.item_detail,
    "item_edit": views.item_edit,
    "item_delete": views.item_delete,
    "attachment_upload": views.attachment_upload,
    "attachment_download": views.attachment_download,
    "login": views.login,
    "logout": views.logout,
    "export_csv": views.export_csv,
    "report": views.report,
    "health": api.health,
    "api_session": api.session_info,
    "api_item_list": api.item_list,
    "api_item_create": api.item_create,
    "api_item_detail": api.item_detail,
}


NO_KEY_MESSAGE = (
    "The sample application has no session key, so it serves nothing: set SAMPLE_SECRET_KEY, "
    "or run `python -m sample_wsgi_app init-db` (scripts/serve does) to keep a random key in "
    "the data directory's secret_key file. SAMPLE_DEV_KEY=1 uses the published development "
    "key, on a machine nobody else can reach."
)


def refuse_without_key(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Answer 503 with `NO_KEY_MESSAGE`: cookies signed with a published key are forgeable."""
    logger.error(NO_KEY_MESSAGE)
    body = (NO_KEY_MESSAGE + "\n").encode()
    start_response(
        "503 Service Unavailable",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


class SampleApp:
    """The legacy application: a WSGI callable that routes to plain view functions.

    Args:
        settings: where the data lives and the cookie-signing key.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_path)
        self.url_map = URL_MAP
        self.views = dict(VIEWS)
        # Warned at the first request rather than at import, so importing the
        # package to run init_db() or a test stays quiet.
        self._warn_about_secret = settings.uses_dev_key
        # The full stack; kept as an attribute so it can be wrapped further.
        self.wsgi_app: WSGIApplication = self.wrap(self.dispatch)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.wsgi_app(environ, start_response)

    def wrap(self, app: WSGIApplication, *, log_requests: bool = True) -> WSGIApplication:
        """Wrap `app` in this application's middleware: request log, error pages, session,
        user and CSRF, outermost first.

        bridge's `route(..., middleware=sample.wrap)` runs a migrated view inside it;
        `log_requests=False` leaves the log out once an ASGI middleware writes it.
        Without a session key (see `settings`) the stack answers every request with 503.
        """
        secret = self.settings.secret_key
        if secret is None:
            stack: WSGIApplication = refuse_without_key
            return RequestLogMiddleware(stack) if log_requests else stack
        stack = CSRFMiddleware(app)
        stack = AuthMiddleware(stack, self.db)
        stack = SessionMiddleware(stack, secret)
        stack = ErrorPageMiddleware(stack)
        return RequestLogMiddleware(stack) if log_requests else stack

    def dispatch(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Match the URL, run the view, and answer with its response."""
        if self._warn_about_secret:
            self._warn_about_secret = False
            logger.warning(
                "SAMPLE_DEV_KEY=1: sessions are signed with the development key published in "
                "sample_wsgi_app/settings.py; anyone can forge them. Never serve others so."
            )
        environ[DB_KEY] = self.db
        environ[SETTINGS_KEY] = self.settings
        request = SampleRequest.from_environ(environ)
        try:
            endpoint, arguments = self.url_map.bind_to_environ(environ).match()
            response = self.views[endpoint](request, **arguments)
        except HTTPException as exc:
            response = views.http_error(request, exc)
        finally:
            # Uploaded files were copied by the view; their temporary files can go.
            request.close()
        return response(environ, start_response)

    def close(self) -> None:
        """Close the database connections; call when no request is running."""
        self.db.close()


def create_app(
    data_dir: str | os.PathLike[str] | None = None, *, secret_key: str | None = None
) -> SampleApp:
    """Build the application; arguments override `SAMPLE_DATA_DIR` and `SAMPLE_SECRET_KEY`.

    Nothing touches the disk until the first request (or `db.init_db()`).
    """
    return SampleApp(Settings.from_env(data_dir=data_dir, secret_key=secret_key))
