"""The Flask equivalent of ``bench.djangosite``: a constant, one SQLite query, a template."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

HELLO = b"Hello, world!"
ROWS = 20

PAGE = """<!doctype html>
<html><head><title>{{ title }}</title></head>
<body><h1>{{ title }}</h1>
<table>{% for row in rows %}
<tr><td>{{ row.number }}</td><td>{{ row.name|title }}</td></tr>{% endfor %}</table>
</body></html>
"""


def prepare(path: str) -> None:
    """Create the table the query reads, with the one row it finds."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, email TEXT)")
        db.execute("INSERT OR REPLACE INTO users VALUES ('bench', 'bench@example.com')")


def create_app() -> Any:
    from flask import Flask, Response, g, render_template
    from jinja2 import DictLoader

    app = Flask(__name__)
    app.jinja_loader = DictLoader({"page.html": PAGE})  # as templates/page.html would be
    database = os.environ["BENCH_FLASK_DB"]

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = sqlite3.connect(database)
        return g.db  # type: ignore[no-any-return]

    @app.teardown_appcontext
    def close(error: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    @app.get("/hello")
    def hello() -> Response:
        return Response(HELLO, mimetype="text/plain")

    @app.get("/orm")
    def orm() -> Response:
        (email,) = db().execute("SELECT email FROM users WHERE username = ?", ("bench",)).fetchone()
        return Response(email.encode(), mimetype="text/plain")

    @app.get("/page")
    def page() -> str:
        rows = [{"number": n, "name": f"item {n}"} for n in range(ROWS)]
        return render_template("page.html", rows=rows, title="Items")

    return app
