"""SQLite connections, one per thread, and the schema with its seed data.

Each thread keeps its own connection in a `threading.local()`, the way many
legacy applications do: a connection is never shared, so no lock is needed
around queries. WAL mode lets readers run while one thread writes, and the
busy timeout makes a second writer wait instead of failing at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sample_wsgi_app.passwords import hash_password
from sample_wsgi_app.settings import Settings, ensure_key_file

logger = logging.getLogger("sample_wsgi_app")

# Python's sqlite3 also waits 5 s by default; SQLite alone would fail at once.
BUSY_TIMEOUT_SECONDS = 5.0
SEED_ITEM_COUNT = 40
SEED_EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
SEED_TOPICS = (
    "Invoice",
    "Roadmap",
    "Meeting notes",
    "Bug report",
    "Release checklist",
    "Customer feedback",
    "Design review",
    "Onboarding guide",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    session_generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_created_at ON items (created_at);
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_item_id ON attachments (item_id);
"""


def utc_timestamp(moment: datetime | None = None) -> str:
    """Format a moment (default: now) the way every table stores it, ISO 8601 in UTC."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None leaves transactions to Database.transaction(), which
    # says BEGIN IMMEDIATE: taking the write lock up front avoids the deadlock
    # two deferred transactions hit when both try to upgrade to writing.
    # check_same_thread=False only so Database.close() can close every thread's
    # connection at shutdown; each connection is still used by one thread.
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable across application crashes in WAL mode; FULL only adds
    # safety against power loss, at an fsync per commit.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


class Database:
    """Per-thread connections to one SQLite file, which is created and seeded on first use.

    Args:
        path: the database file; its directory is created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._initialized = False
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it (and the database) on first use."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self.initialize()
            connection = _connect(self.path)
            with self._lock:
                self._close_dead_threads()
                self._connections.append((threading.current_thread(), connection))
            self._local.connection = connection
        return connection

    def _close_dead_threads(self) -> None:
        # A thread pool that replaces its workers would otherwise leak one open
        # connection per retired thread. Called with self._lock held.
        alive = []
        for thread, connection in self._connections:
            if thread.is_alive():
                alive.append((thread, connection))
            else:
                connection.close()
        self._connections = alive

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction, committed on success, rolled back on error."""
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def initialize(self) -> None:
        """Create the schema and seed data unless this process already did."""
        with self._lock:
            if self._initialized:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = _connect(self.path)
            try:
                create_schema(connection)
            finally:
                connection.close()
            self._initialized = True

    def close(self) -> None:
        """Close every thread's connection; call only when no request is running."""
        with self._lock:
            for _thread, connection in self._connections:
                connection.close()
            self._connections = []
            self._local = threading.local()


def create_schema(connection: sqlite3.Connection) -> None:
    """Create missing tables, then seed them if no user exists yet.

    Safe to run from several processes at once: the seed runs under the write
    lock and checks again for users inside it.
    """
    connection.executescript(SCHEMA)
    connection.execute("BEGIN IMMEDIATE")
    try:
        _add_missing_columns(connection)
        if connection.execute("SELECT 1 FROM users LIMIT 1").fetchone() is None:
            _seed(connection)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


# Columns added after the first release, for databases made before them:
# (table, column, definition).
ADDED_COLUMNS = (
    ("users", "is_admin", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "session_generation", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    for table, column, definition in ADDED_COLUMNS:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if (table, column) == ("users", "is_admin"):
                # Before roles, the seeded admin was the one account: it stays the admin.
                connection.execute("UPDATE users SET is_admin = 1 WHERE username = 'admin'")


def _seed(connection: sqlite3.Connection) -> None:
    connection.execute(
        "INSERT INTO users (username, password_hash, created_at, is_admin) VALUES (?, ?, ?, 1)",
        ("admin", hash_password("admin"), utc_timestamp(SEED_EPOCH)),
    )
    rows = []
    for number in range(1, SEED_ITEM_COUNT + 1):
        topic = SEED_TOPICS[(number - 1) % len(SEED_TOPICS)]
        body = (
            f"{topic} number {number}.\n\n"
            f"Seeded so that lists paginate and searches have something to find."
        )
        created = utc_timestamp(SEED_EPOCH + timedelta(days=number * 9, hours=number % 7))
        rows.append((f"{topic} #{number}", body, created, "admin"))
    connection.executemany(
        "INSERT INTO items (title, body, created_at, owner) VALUES (?, ?, ?, ?)", rows
    )
    logger.info("Seeded the database with user 'admin' and %d items.", len(rows))


def init_db(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create the data directory, schema, seed data and session key file now; return the
    database path.

    Without an argument the directory comes from `SAMPLE_DATA_DIR`, else `./var`.
    Running it again changes nothing (the key is made once and kept).
    """
    settings = Settings.from_env(data_dir=data_dir)
    database = Database(settings.database_path)
    try:
        database.initialize()
    finally:
        database.close()
    settings.attachments_dir.mkdir(parents=True, exist_ok=True)
    ensure_key_file(settings.data_dir)
    return settings.database_path
