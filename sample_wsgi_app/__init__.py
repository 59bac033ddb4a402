"""The legacy application that bridge's README, benchmarks and migration guide use.

A miniature of a classic WSGI application built with werkzeug: a `Map` of
`Rule`s dispatching to plain `def view(request)` functions, middleware written
as WSGI wrappers (signed-cookie sessions, login, CSRF, request logging, error
pages), and SQLite with one connection per thread. `app` is the WSGI callable::

    from sample_wsgi_app import app            # WSGI
    from sample_wsgi_app.asgi import application  # the same app, served by bridge

`create_app(data_dir=...)` builds an independent instance; `init_db()` creates
the schema and seed data (user `admin`, password `admin`) ahead of the first
request. Data lives in `SAMPLE_DATA_DIR`, by default `./var`.
"""

from __future__ import annotations

from sample_wsgi_app.application import SampleApp, create_app
from sample_wsgi_app.db import init_db
from sample_wsgi_app.sessions import SESSION_COOKIE, dump_session, load_session

app = create_app()

__all__ = [
    "SESSION_COOKIE",
    "SampleApp",
    "app",
    "create_app",
    "dump_session",
    "init_db",
    "load_session",
]
