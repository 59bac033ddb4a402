"""The queries the views run, and the plain records they return."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sample_wsgi_app.db import Database, utc_timestamp
from sample_wsgi_app.passwords import hash_password

PER_PAGE = 10
TITLE_MAX = 200
BODY_MAX = 20_000
# Rows fetched per query while exporting: each batch is a short read, so a slow
# client never holds a read transaction open (which would stall WAL checkpoints).
EXPORT_BATCH = 100
# Hours the backlog report walks; with the 40 seeded items this makes a query
# of roughly 100-300 ms, slow on purpose, to stand for a heavy legacy report.
REPORT_HOURS = 15_000


@dataclass(frozen=True)
class User:
    """A user account, without its password hash.

    `session_generation` is raised at each logout; a session saved under an older
    generation no longer logs anyone in (see `auth.session_user`).
    """

    id: int
    username: str
    is_admin: bool = False
    session_generation: int = 0

    def may_change(self, item: Item) -> bool:
        """Tell whether this user may edit or delete `item`: its owner, or an admin."""
        return self.is_admin or item.owner == self.username


@dataclass(frozen=True)
class Item:
    """One item of the list."""

    id: int
    title: str
    body: str
    created_at: str
    owner: str


@dataclass(frozen=True)
class Attachment:
    """A file uploaded to an item; `path` is relative to the data directory."""

    id: int
    item_id: int
    filename: str
    content_type: str
    size: int
    path: str
    created_at: str


@dataclass(frozen=True)
class Page:
    """One page of a (possibly filtered) item list."""

    items: list[Item]
    page: int
    pages: int
    total: int
    query: str
    per_page: int = PER_PAGE


@dataclass(frozen=True)
class ReportRow:
    """Backlog of one 30-day period: open items summed over its hours."""

    period: int
    item_hours: int
    body_chars: int


def ping(db: Database) -> None:
    """Run `SELECT 1`, raising if the database cannot answer."""
    db.connection().execute("SELECT 1").fetchone()


_USER_COLUMNS = "id, username, is_admin, session_generation"


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["username"], bool(row["is_admin"]), row["session_generation"])


def get_user(db: Database, user_id: int) -> User | None:
    """Return the user with this id, if any."""
    row = db.connection().execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
    found = row.fetchone()
    return _user(found) if found else None


def get_user_credentials(db: Database, username: str) -> tuple[User, str] | None:
    """Return the user with this name and the stored password hash, if any."""
    found = (
        db.connection()
        .execute(
            f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = ?", (username,)
        )
        .fetchone()
    )
    return (_user(found), found["password_hash"]) if found else None


def create_user(db: Database, username: str, password: str, *, is_admin: bool = False) -> User:
    """Add a user account and return it."""
    with db.transaction() as connection:
        cursor = connection.execute(
            "INSERT INTO users (username, password_hash, created_at, is_admin) VALUES (?, ?, ?, ?)",
            (username, hash_password(password), utc_timestamp(), int(is_admin)),
        )
    assert cursor.lastrowid is not None
    return User(cursor.lastrowid, username, is_admin)


def end_sessions(db: Database, user_id: int) -> None:
    """Log the user out everywhere: every session issued until now stops working."""
    with db.transaction() as connection:
        connection.execute(
            "UPDATE users SET session_generation = session_generation + 1 WHERE id = ?",
            (user_id,),
        )


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_items(db: Database, *, page: int = 1, query: str = "") -> Page:
    """Return one page of items, newest first, whose title or body contains `query`."""
    page = max(page, 1)
    where = ""
    params: tuple[str, ...] = ()
    if query:
        where = "WHERE title LIKE ? ESCAPE '\\' OR body LIKE ? ESCAPE '\\'"
        params = (_like_pattern(query), _like_pattern(query))
    connection = db.connection()
    total = connection.execute(f"SELECT count(*) FROM items {where}", params).fetchone()[0]
    rows = connection.execute(
        f"SELECT * FROM items {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        (*params, PER_PAGE, (page - 1) * PER_PAGE),
    ).fetchall()
    return Page(
        items=[Item(**row) for row in rows],
        page=page,
        pages=max(1, math.ceil(total / PER_PAGE)),
        total=total,
        query=query,
    )


def get_item(db: Database, item_id: int) -> Item | None:
    """Return the item with this id, if any."""
    row = db.connection().execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    return Item(**row) if row else None


def item_errors(title: str, body: str) -> dict[str, str]:
    """Return a message per invalid field; empty when the item may be saved."""
    errors = {}
    if not title.strip():
        errors["title"] = "A title is required."
    elif len(title) > TITLE_MAX:
        errors["title"] = f"A title has at most {TITLE_MAX} characters."
    if len(body) > BODY_MAX:
        errors["body"] = f"A body has at most {BODY_MAX} characters."
    return errors


def create_item(db: Database, *, title: str, body: str, owner: str) -> Item:
    """Insert an item and return it."""
    created_at = utc_timestamp()
    with db.transaction() as connection:
        cursor = connection.execute(
            "INSERT INTO items (title, body, created_at, owner) VALUES (?, ?, ?, ?)",
            (title, body, created_at, owner),
        )
    assert cursor.lastrowid is not None
    return Item(cursor.lastrowid, title, body, created_at, owner)


def update_item(db: Database, item_id: int, *, title: str, body: str) -> bool:
    """Change an item's title and body; False if it does not exist."""
    with db.transaction() as connection:
        cursor = connection.execute(
            "UPDATE items SET title = ?, body = ? WHERE id = ?", (title, body, item_id)
        )
    return cursor.rowcount == 1


def delete_item(db: Database, item_id: int) -> list[str] | None:
    """Delete an item with its attachments; return their stored paths, None if no such item."""
    with db.transaction() as connection:
        paths = [
            row["path"]
            for row in connection.execute(
                "SELECT path FROM attachments WHERE item_id = ?", (item_id,)
            )
        ]
        cursor = connection.execute("DELETE FROM items WHERE id = ?", (item_id,))
    return paths if cursor.rowcount == 1 else None


def list_attachments(db: Database, item_id: int) -> list[Attachment]:
    """Return an item's attachments, oldest first."""
    rows = db.connection().execute(
        "SELECT * FROM attachments WHERE item_id = ? ORDER BY id", (item_id,)
    )
    return [Attachment(**row) for row in rows]


def get_attachment(db: Database, attachment_id: int) -> Attachment | None:
    """Return the attachment with this id, if any."""
    row = (
        db.connection()
        .execute("SELECT * FROM attachments WHERE id = ?", (attachment_id,))
        .fetchone()
    )
    return Attachment(**row) if row else None


def add_attachment(
    db: Database, *, item_id: int, filename: str, content_type: str, size: int, path: str
) -> Attachment:
    """Record a stored file as an attachment of an item."""
    created_at = utc_timestamp()
    with db.transaction() as connection:
        cursor = connection.execute(
            "INSERT INTO attachments (item_id, filename, content_type, size, path, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item_id, filename, content_type, size, path, created_at),
        )
    assert cursor.lastrowid is not None
    return Attachment(cursor.lastrowid, item_id, filename, content_type, size, path, created_at)


def iter_items(db: Database) -> Iterator[Item]:
    """Yield every item by id, reading a batch at a time from the current thread's connection.

    Each batch asks `db.connection()` again, so the iteration may move between
    threads, as a WSGI server is free to do between two chunks of a response.
    """
    last_id = 0
    while True:
        rows = (
            db.connection()
            .execute(
                "SELECT * FROM items WHERE id > ? ORDER BY id LIMIT ?", (last_id, EXPORT_BATCH)
            )
            .fetchall()
        )
        if not rows:
            return
        for row in rows:
            yield Item(**row)
        last_id = rows[-1]["id"]


BACKLOG_REPORT_SQL = """
WITH RECURSIVE
    hours(hour) AS (SELECT 0 UNION ALL SELECT hour + 1 FROM hours WHERE hour < :hours),
    opened(hour, body_chars) AS MATERIALIZED (
        SELECT CAST((julianday(created_at) - julianday(:start)) * 24 AS INTEGER), length(body)
        FROM items
    )
SELECT hours.hour / (24 * 30) AS period,
       count(opened.hour) AS item_hours,
       coalesce(sum(opened.body_chars), 0) AS body_chars
FROM hours LEFT JOIN opened ON opened.hour <= hours.hour
GROUP BY period
ORDER BY period
"""


def backlog_report(db: Database) -> tuple[list[ReportRow], float]:
    """Return the backlog per 30-day period and the query's duration in milliseconds.

    It joins every hour since the first item with every item opened by then,
    which is slow on purpose.
    """
    connection = db.connection()
    start = connection.execute("SELECT min(created_at) FROM items").fetchone()[0]
    started = time.perf_counter()
    rows = connection.execute(
        BACKLOG_REPORT_SQL, {"hours": REPORT_HOURS, "start": start or utc_timestamp()}
    ).fetchall()
    elapsed_ms = (time.perf_counter() - started) * 1000
    return [ReportRow(*row) for row in rows], elapsed_ms
