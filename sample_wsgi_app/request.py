"""The request type views receive, and the environ keys the middleware fills in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import Unauthorized
from werkzeug.wrappers import Request

from sample_wsgi_app.queries import User
from sample_wsgi_app.sessions import csrf_token

if TYPE_CHECKING:
    from sample_wsgi_app.db import Database
    from sample_wsgi_app.settings import Settings

# Keys this application adds to the WSGI environ. Code outside the legacy stack
# (an async route, say) can read the same values from the same environ.
SESSION_KEY = "sample.session"  # dict, set by SessionMiddleware
USER_KEY = "sample.user"  # queries.User or None, set by AuthMiddleware
REQUEST_KEY = "sample.request"  # SampleRequest, set by whoever parsed the body first
DB_KEY = "sample.db"  # db.Database, set by SampleApp
SETTINGS_KEY = "sample.settings"  # settings.Settings, set by SampleApp

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class SampleRequest(Request):
    """A werkzeug Request with the session, user and database of this application."""

    # The multipart envelope around a maximal upload needs a little room.
    max_content_length = MAX_UPLOAD_BYTES + 1024 * 1024
    # Text fields stay in memory; files go to temporary files past 500 KiB.
    max_form_memory_size = 1024 * 1024

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> SampleRequest:
        """Return the request already built for this environ, or build and remember one.

        Middleware that reads the form shares its request, so a body is parsed once.
        """
        request = environ.get(REQUEST_KEY)
        if not isinstance(request, cls):
            request = cls(environ)
            environ[REQUEST_KEY] = request
        return request

    @property
    def session(self) -> dict[str, Any]:
        """The session dict; changes to it are saved in the cookie."""
        session: dict[str, Any] = self.environ.setdefault(SESSION_KEY, {})
        return session

    @property
    def user(self) -> User | None:
        """The logged-in user, or None."""
        user = self.environ.get(USER_KEY)
        return user if isinstance(user, User) else None

    def require_user(self) -> User:
        """Return the logged-in user, raising 401 if there is none."""
        if self.user is None:
            raise Unauthorized()
        return self.user

    def csrf_token(self) -> str:
        """The token a form must send back (field `csrf_token` or header `X-CSRF-Token`)."""
        return csrf_token(self.session)

    @property
    def db(self) -> Database:
        """The application's database."""
        db: Database = self.environ[DB_KEY]
        return db

    @property
    def settings(self) -> Settings:
        """The application's settings."""
        settings: Settings = self.environ[SETTINGS_KEY]
        return settings
