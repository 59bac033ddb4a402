"""The sample legacy application, driven in process through werkzeug's test client.

Every app under test is wrapped in `wsgiref.validate.validator`, so each
request also checks the application's side of PEP 3333.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import ANY
from wsgiref.validate import InputWrapper, validator

import httpx
import pytest
from werkzeug.test import Client, EnvironBuilder, TestResponse

from sample_wsgi_app import (
    SESSION_COOKIE,
    SampleApp,
    create_app,
    dump_session,
    load_session,
    queries,
    sessions,
)
from sample_wsgi_app.db import Database, init_db
from sample_wsgi_app.middleware import ErrorPageMiddleware
from sample_wsgi_app.passwords import hash_password, verify_password
from sample_wsgi_app.request import SampleRequest
from sample_wsgi_app.settings import DEV_SECRET_KEY, Settings

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

SECRET = "test-secret"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A werkzeug Client that closes every response it handed out when the test ends."""

    def __init__(self, app: SampleApp) -> None:
        self.client = Client(validator(app))
        self._responses: list[TestResponse] = []

    def open(self, path: str, method: str = "GET", **kwargs: Any) -> TestResponse:
        response = self.client.open(path, method=method, **kwargs)
        self._responses.append(response)
        return response

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open(path, "POST", **kwargs)

    def text(self, path: str, **kwargs: Any) -> str:
        response = self.get(path, **kwargs)
        assert response.status_code == 200, response.status
        return response.get_data(as_text=True)

    def csrf_token(self, path: str = "/login") -> str:
        """Load a page with a form and return the CSRF token it carries."""
        match = TOKEN_RE.search(self.text(path))
        assert match is not None
        return match.group(1)

    def login(self, username: str = "admin", password: str = "admin") -> TestResponse:
        token = self.csrf_token("/login")
        form = {"username": username, "password": password, "csrf_token": token}
        return self.post("/login", data=form)

    def session(self) -> dict[str, Any]:
        cookie = self.client.get_cookie(SESSION_COOKIE)
        return load_session(cookie.value if cookie else None, SECRET)

    def close(self) -> None:
        for response in self._responses:
            response.close()
            # werkzeug's client spools large request bodies to a temporary file
            # and leaves it open; the input belongs to the "server", so close it here.
            stream = response.request.environ["wsgi.input"]
            if isinstance(stream, InputWrapper):
                stream = stream.input
            stream.close()


class StartResponseRecorder:
    """Stands in for a server's start_response in tests that call an app directly."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], OptExcInfo | None]] = []

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        self.calls.append((status, headers, exc_info))
        return self._write

    @staticmethod
    def _write(data: bytes) -> None:
        raise AssertionError("This application never uses write().")

    @property
    def statuses(self) -> list[str]:
        return [status for status, _headers, _exc_info in self.calls]


def close_body(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(path))
    return path


@pytest.fixture
def sample(data_dir: Path) -> Iterator[SampleApp]:
    app = create_app(data_dir=data_dir, secret_key=SECRET)
    yield app
    app.close()


@pytest.fixture
def browser(sample: SampleApp) -> Iterator[Browser]:
    browser = Browser(sample)
    yield browser
    browser.close()


@pytest.fixture
def admin(browser: Browser) -> Browser:
    response = browser.login()
    assert response.status_code == 303
    return browser


def item_ids(html: str) -> list[int]:
    return [int(value) for value in re.findall(r'class="item" data-item-id="(\d+)"', html)]


# Pure helpers: passwords, sessions, settings, the database.


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("s3cret", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert hash_password("s3cret", iterations=1000) != stored  # salted
    assert not verify_password("s3cret", "not-a-hash")
    assert not verify_password("s3cret", "md5$1$00$00")


def test_session_round_trip() -> None:
    data = {"user_id": 7, "csrf_token": "abc", "note": "héllo", "issued_at": int(time.time())}
    cookie = dump_session(data, SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", cookie)
    assert load_session(cookie, SECRET) == data
    assert load_session(cookie, SECRET.encode()) == data


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "",
        "garbage",
        "a.b.c",
        "é.é",
        # Signed with another key.
        dump_session({"user_id": 1}, "other-secret"),
        # A valid signature over a payload that is not a JSON object.
        dump_session({"x": 1}, SECRET).replace(".", "x.", 1),
    ],
)
def test_session_rejects_bad_cookies(cookie: str | None) -> None:
    assert load_session(cookie, SECRET) == {}


def test_session_rejects_tampered_payload() -> None:
    cookie = dump_session({"user_id": 2}, SECRET)
    payload, signature = cookie.split(".")
    forged = dump_session({"user_id": 1}, SECRET).split(".")[0]
    assert load_session(f"{forged}.{signature}", SECRET) == {}
    assert load_session(f"{payload}.{signature[:-2]}", SECRET) == {}


def test_settings_default_to_var_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAMPLE_DATA_DIR", raising=False)
    monkeypatch.setenv("SAMPLE_SECRET_KEY", "from-env")
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings == Settings(data_dir=tmp_path / "var", secret_key="from-env")
    monkeypatch.setenv("SAMPLE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert Settings.from_env().data_dir == tmp_path / "elsewhere"


def test_init_db_creates_schema_and_seed_once(data_dir: Path) -> None:
    path = init_db()
    assert path == data_dir / "sample.sqlite3"
    assert init_db(data_dir) == path  # a second run adds nothing
    assert (data_dir / "attachments").is_dir()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT username FROM users").fetchall() == [("admin",)]
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (40,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


def connection_of_a_finished_thread(db: Database) -> sqlite3.Connection:
    """The connection ``db`` gave another thread, which has ended since."""
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(db.connection()))
    thread.start()
    thread.join()
    return seen[0]


def test_database_keeps_one_connection_per_thread(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    theirs = connection_of_a_finished_thread(db)
    try:
        mine = db.connection()
        assert db.connection() is mine
        assert theirs is not mine
        assert mine.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    finally:
        db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError):
        theirs.execute("SELECT 1")


def test_database_closes_connections_of_finished_threads(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    theirs = connection_of_a_finished_thread(db)
    try:
        db.connection()  # a new connection sweeps up the dead thread's one
        with pytest.raises(sqlite3.ProgrammingError):
            theirs.execute("SELECT 1")
    finally:
        db.close()


def test_threads_write_and_read_concurrently(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for number in range(10):
                queries.create_item(db, title=f"w{worker}-{number}", body="", owner="admin")
                queries.list_items(db, query=f"w{worker}-")
        except BaseException as exc:  # reported below; a thread cannot fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert queries.list_items(db).total == 40 + 8 * 10
        assert queries.list_items(db, query="w3-").total == 10
    finally:
        db.close()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    try:
        with pytest.raises(RuntimeError), db.transaction() as connection:
            connection.execute("DELETE FROM items")
            raise RuntimeError("abort")
        assert db.connection().execute("SELECT count(*) FROM items").fetchone()[0] == 40
    finally:
        db.close()


# Sessions and login through the application.


def test_login_page_sets_a_signed_session_cookie(browser: Browser) -> None:
    token = browser.csrf_token("/login")
    cookie = browser.client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert cookie.http_only
    assert load_session(cookie.value, SECRET) == {"csrf_token": token, "issued_at": ANY}
    assert load_session(cookie.value, "another-secret") == {}


def test_anonymous_pages_set_no_cookie(browser: Browser) -> None:
    response = browser.get("/items")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert 'id="login-link"' in response.get_data(as_text=True)


def test_login_success_starts_a_new_session(browser: Browser) -> None:
    token = browser.csrf_token("/login?next=/items/new")
    response = browser.post(
        "/login",
        data={"username": "admin", "password": "admin", "csrf_token": token, "next": "/items/new"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/items/new"
    session = browser.session()
    assert session["user_id"] == 1
    assert session["csrf_token"] != token  # rotated at login
    html = browser.text("/items")
    assert 'data-user="admin"' in html
    assert 'id="logout-form"' in html
    assert f'value="{session["csrf_token"]}"' in html


@pytest.mark.parametrize(("username", "password"), [("admin", "wrong"), ("nobody", "admin")])
def test_login_failure(browser: Browser, username: str, password: str) -> None:
    response = browser.login(username, password)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="login-error"' in html
    assert f'value="{username}"' in html
    assert "user_id" not in browser.session()


def test_login_refuses_redirects_off_site(browser: Browser) -> None:
    token = browser.csrf_token()
    form = {"username": "admin", "password": "admin", "csrf_token": token}
    response = browser.post("/login", data={**form, "next": "//evil.example/"})
    assert response.headers["Location"] == "/items"


def test_tampered_session_cookie_is_ignored_and_deleted(browser: Browser) -> None:
    forged = dump_session({"user_id": 1, "csrf_token": "x"}, "guessed-secret")
    browser.client.set_cookie(SESSION_COOKIE, forged)
    response = browser.get("/items")
    assert 'id="login-link"' in response.get_data(as_text=True)
    assert re.match(rf"{SESSION_COOKIE}=;.*Max-Age=0", response.headers["Set-Cookie"])
    assert browser.get("/items/new").status_code == 303


def test_logout_ends_the_session(admin: Browser) -> None:
    token = admin.session()["csrf_token"]
    response = admin.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert admin.client.get_cookie(SESSION_COOKIE) is None
    assert 'id="login-link"' in admin.text("/items")


# CSRF.


def test_form_post_without_csrf_token_is_refused(admin: Browser) -> None:
    response = admin.post("/items/new", data={"title": "Sneaky"})
    assert response.status_code == 403
    assert 'data-status="403"' in response.get_data(as_text=True)
    assert "Sneaky" not in admin.text("/items")


def test_form_post_with_wrong_csrf_token_is_refused(admin: Browser) -> None:
    response = admin.post("/items/new", data={"title": "Sneaky", "csrf_token": "wrong"})
    assert response.status_code == 403
    response = admin.post("/logout", data={"csrf_token": "wrong"})
    assert response.status_code == 403
    assert admin.session()["user_id"] == 1


def test_login_form_needs_the_token_too(browser: Browser) -> None:
    response = browser.post("/login", data={"username": "admin", "password": "admin"})
    assert response.status_code == 403
    assert browser.session() == {}


def test_csrf_token_in_header_is_accepted_for_forms(admin: Browser) -> None:
    token = admin.session()["csrf_token"]
    response = admin.post(
        "/items/new", data={"title": "Via header"}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 303


def test_json_api_with_a_session_needs_the_csrf_header(admin: Browser) -> None:
    token = admin.session()["csrf_token"]
    response = admin.post("/api/items", json={"title": "No header"})
    assert response.status_code == 403
    assert response.json == {"error": "Send the session's CSRF token in the X-CSRF-Token header."}
    response = admin.post("/api/items", json={"title": "Bad"}, headers={"X-CSRF-Token": "x"})
    assert response.status_code == 403
    response = admin.post("/api/items", json={"title": "Good"}, headers={"X-CSRF-Token": token})
    assert response.status_code == 201


def test_json_api_without_a_session_needs_login(browser: Browser) -> None:
    response = browser.post("/api/items", json={"title": "Anonymous"})
    assert response.status_code == 401
    assert "error" in response.json  # type: ignore[operator]


# Items.


def test_root_redirects_to_items(browser: Browser) -> None:
    response = browser.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/items"


def test_writes_redirect_anonymous_visitors_to_login(browser: Browser) -> None:
    response = browser.get("/items/new?from=nav")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=%2Fitems%2Fnew%3Ffrom%3Dnav"
    assert browser.get("/items/3/edit").headers["Location"] == "/login?next=%2Fitems%2F3%2Fedit"


def test_pagination(browser: Browser) -> None:
    first = browser.text("/items")
    assert 'data-page="1" data-pages="4"' in first
    assert item_ids(first) == list(range(40, 30, -1))  # newest first
    assert 'id="page-prev"' not in first
    assert 'href="/items?page=2"' in first
    last = browser.text("/items?page=4")
    assert item_ids(last) == list(range(10, 0, -1))
    assert 'id="page-next"' not in last
    assert item_ids(browser.text("/items?page=nonsense")) == item_ids(first)
    assert 'id="no-items"' in browser.text("/items?page=9")


def test_search(browser: Browser) -> None:
    html = browser.text("/items?q=roadmap")
    assert 'data-total="5"' in html
    assert item_ids(html) == [34, 26, 18, 10, 2]
    assert "Roadmap #2<" in html
    # LIKE wildcards in the query are matched literally.
    assert 'data-total="0"' in browser.text("/items?q=%25")
    paged = browser.text("/items?q=e&page=2")
    assert 'href="/items?page=3&amp;q=e"' in paged


def test_item_detail_and_404(browser: Browser) -> None:
    html = browser.text("/items/2")
    assert '<h1 id="item-title">Roadmap #2</h1>' in html
    assert 'id="edit-link"' not in html  # anonymous
    response = browser.get("/items/999")
    assert response.status_code == 404
    assert 'data-status="404"' in response.get_data(as_text=True)


def test_create_edit_delete_item(admin: Browser) -> None:
    token = admin.csrf_token("/items/new")
    title = "<script>alert(1)</script> & more"
    response = admin.post("/items/new", data={"title": title, "body": "Hi", "csrf_token": token})
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/items/41", location)
    html = admin.text(location)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<script>" not in html
    assert 'id="item-owner">admin<' in html

    response = admin.post(
        f"{location}/edit", data={"title": "Renamed", "body": "Changed", "csrf_token": token}
    )
    assert response.status_code == 303
    html = admin.text(location)
    assert '<h1 id="item-title">Renamed</h1>' in html
    assert "Changed" in html

    response = admin.post(f"{location}/delete", data={"csrf_token": token})
    assert response.status_code == 303
    assert admin.get(location).status_code == 404


def test_invalid_item_redisplays_the_form(admin: Browser) -> None:
    token = admin.csrf_token("/items/new")
    response = admin.post("/items/new", data={"title": "  ", "csrf_token": token})
    assert response.status_code == 400
    assert 'data-field="title"' in response.get_data(as_text=True)
    assert 'data-total="40"' in admin.text("/items")


def test_method_not_allowed_lists_the_allowed_methods(browser: Browser) -> None:
    response = browser.get("/logout")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# Attachments.


def test_upload_and_download_are_byte_exact(admin: Browser, data_dir: Path) -> None:
    token = admin.session()["csrf_token"]
    payload = os.urandom(3 * 1024 * 1024)
    response = admin.post(
        "/items/5/attachments",
        data={"csrf_token": token, "file": (io.BytesIO(payload), "résumé 1.bin", "x-test/blob")},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/items/5"

    html = admin.text("/items/5")
    match = re.search(r'data-attachment-id="(\d+)"><a href="(/attachments/\d+)">', html)
    assert match is not None
    assert "résumé 1.bin" in html
    stored = list((data_dir / "attachments" / "5").iterdir())
    assert [path.read_bytes() == payload for path in stored] == [True]

    download = admin.get(match.group(2))
    assert download.status_code == 200
    assert download.headers["Content-Length"] == str(len(payload))
    assert download.headers["Content-Type"] == "x-test/blob"
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"resume 1.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin"
    )
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.get_data() == payload

    api = admin.get("/api/items/5").json
    assert api is not None
    assert api["attachments"] == [
        {
            "id": int(match.group(1)),
            "item_id": 5,
            "filename": "résumé 1.bin",
            "content_type": "x-test/blob",
            "size": len(payload),
            "created_at": api["attachments"][0]["created_at"],
            "url": match.group(2),
        }
    ]

    token = admin.session()["csrf_token"]
    assert admin.post("/items/5/delete", data={"csrf_token": token}).status_code == 303
    assert list((data_dir / "attachments" / "5").iterdir()) == []
    assert admin.get(match.group(2)).status_code == 404


def test_download_uses_the_servers_file_wrapper(admin: Browser, sample: SampleApp) -> None:
    token = admin.session()["csrf_token"]
    admin.post(
        "/items/1/attachments",
        data={"csrf_token": token, "file": (io.BytesIO(b"hello"), "a.txt", "text/plain")},
    )

    class ServerFileWrapper:
        def __init__(self, file: io.BufferedReader, block_size: int = 8192) -> None:
            self.file = file

        def __iter__(self) -> Iterator[bytes]:
            yield self.file.read()

        def close(self) -> None:
            self.file.close()

    cookie = admin.client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie.value}"}
    environ = EnvironBuilder("/attachments/1", headers=headers).get_environ()
    environ["wsgi.file_wrapper"] = ServerFileWrapper
    body = sample(environ, StartResponseRecorder())
    try:
        # Passed through every middleware untouched, so a server can send the file itself.
        assert isinstance(body, ServerFileWrapper)
        assert list(body) == [b"hello"]
    finally:
        close_body(body)


def test_upload_needs_a_file_and_an_item(admin: Browser) -> None:
    token = admin.session()["csrf_token"]
    response = admin.post("/items/5/attachments", data={"csrf_token": token})
    assert response.status_code == 400
    response = admin.post(
        "/items/999/attachments",
        data={"csrf_token": token, "file": (io.BytesIO(b"x"), "x.txt")},
    )
    assert response.status_code == 404


def test_upload_needs_a_login(browser: Browser, data_dir: Path) -> None:
    token = browser.csrf_token("/login")
    response = browser.post(
        "/items/5/attachments",
        data={"csrf_token": token, "file": (io.BytesIO(b"x"), "x.txt")},
        headers={"Referer": "http://localhost/items/5"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=%2Fitems%2F5"
    assert not (data_dir / "attachments").exists()


def test_upload_over_the_limit_is_refused(
    admin: Browser, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SampleRequest, "max_content_length", 64 * 1024)
    token = admin.session()["csrf_token"]
    response = admin.post(
        "/items/5/attachments",
        data={"csrf_token": token, "file": (io.BytesIO(b"x" * 65 * 1024), "big.bin")},
    )
    assert response.status_code == 413
    assert not (data_dir / "attachments").exists()


def test_refused_upload_leaves_nothing_behind(admin: Browser, data_dir: Path) -> None:
    response = admin.post(
        "/items/5/attachments",
        data={"csrf_token": "wrong", "file": (io.BytesIO(b"x" * 1_000_000), "x.bin")},
    )
    assert response.status_code == 403
    assert not (data_dir / "attachments" / "5").exists()


# Export, report, health, API.


def test_csv_export_streams_one_row_per_chunk(browser: Browser, sample: SampleApp) -> None:
    response = browser.get("/export.csv")
    assert response.status_code == 200
    assert response.is_streamed
    assert "Content-Length" not in response.headers
    assert response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["id", "title", "body", "created_at", "owner"]
    assert [row[0] for row in rows[1:]] == [str(n) for n in range(1, 41)]
    assert rows[2][1] == "Roadmap #2"
    assert rows[2][2].startswith("Roadmap number 2.\n\n")

    # Called directly, the body is a lazy iterable: one chunk per row.
    start_response = StartResponseRecorder()
    body = sample(EnvironBuilder("/export.csv").get_environ(), start_response)
    try:
        assert not isinstance(body, (list, tuple, bytes))
        chunks = list(body)
    finally:
        close_body(body)
    assert start_response.statuses == ["200 OK"]
    assert len(chunks) == 41
    assert chunks[0] == b"id,title,body,created_at,owner\r\n"


def test_report(browser: Browser) -> None:
    html = browser.text("/report")
    assert 'id="report-table"' in html
    periods = re.findall(r'data-period="(\d+)"', html)
    assert periods == [str(n) for n in range(len(periods))]
    assert len(periods) > 12
    elapsed = re.search(r'data-elapsed-ms="([\d.]+)"', html)
    assert elapsed is not None
    assert float(elapsed.group(1)) > 0


def test_health(browser: Browser) -> None:
    response = browser.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_api_list_paginates_and_searches(browser: Browser) -> None:
    data = browser.get("/api/items?page=2").json
    assert data is not None
    assert (data["page"], data["pages"], data["per_page"], data["total"]) == (2, 4, 10, 40)
    assert [item["id"] for item in data["items"]] == list(range(30, 20, -1))
    found = browser.get("/api/items?q=Invoice").json
    assert found is not None
    assert found["total"] == 5
    assert all(item["title"].startswith("Invoice #") for item in found["items"])


def test_api_detail(browser: Browser) -> None:
    assert browser.get("/api/items/2").json == {
        "id": 2,
        "title": "Roadmap #2",
        "body": "Roadmap number 2.\n\n"
        "Seeded so that lists paginate and searches have something to find.",
        "created_at": "2024-01-19T11:00:00Z",
        "owner": "admin",
        "url": "/items/2",
        "attachments": [],
    }
    response = browser.get("/api/items/999")
    assert response.status_code == 404
    assert set(response.json or {}) == {"error"}


def test_api_create(admin: Browser) -> None:
    headers = {"X-CSRF-Token": admin.session()["csrf_token"]}
    response = admin.post("/api/items", json={"title": "From API", "body": "B"}, headers=headers)
    assert response.status_code == 201
    created = response.json
    assert created is not None
    assert response.headers["Location"] == f"/api/items/{created['id']}"
    assert (created["title"], created["body"], created["owner"]) == ("From API", "B", "admin")
    assert admin.get(response.headers["Location"]).json == {**created, "attachments": []}

    response = admin.post("/api/items", json={"title": ""}, headers=headers)
    assert response.status_code == 400
    assert response.json == {"error": "The item is invalid.", "fields": {"title": ANY_TEXT}}
    response = admin.post("/api/items", data="{not json", headers=headers)
    assert response.status_code == 400


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


def test_api_session_hands_out_the_csrf_token(admin: Browser) -> None:
    data = admin.get("/api/session").json
    assert data == {"user": "admin", "csrf_token": admin.session()["csrf_token"]}


def test_unknown_api_route_answers_json(browser: Browser) -> None:
    response = browser.get("/api/nothing")
    assert response.status_code == 404
    assert response.mimetype == "application/json"


# Errors and logging.


def test_error_page_hides_details(
    browser: Browser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(db: Database) -> None:
        raise sqlite3.OperationalError("disk I/O error at /srv/secret/path")

    monkeypatch.setattr(queries, "ping", broken)
    with caplog.at_level(logging.ERROR, logger="sample_wsgi_app"):
        response = browser.get("/health")
    assert response.status_code == 500
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    for secret in ("/srv/secret", "OperationalError", "Traceback", "disk I/O"):
        assert secret not in body
    error_id = re.search(r'id="error-id">([0-9a-f]+)<', body)
    assert error_id is not None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error_id.group(1) in record.getMessage()
    assert record.exc_info is not None
    assert "disk I/O error at /srv/secret/path" in str(record.exc_info[1])


def test_error_page_is_json_under_api(
    browser: Browser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(db: Database, item_id: int) -> None:
        raise RuntimeError("secret")

    monkeypatch.setattr(queries, "get_item", broken)
    with caplog.at_level(logging.CRITICAL, logger="sample_wsgi_app"):
        response = browser.get("/api/items/1")
    assert response.status_code == 500
    data = response.json
    assert data is not None
    assert "secret" not in json.dumps(data)


def test_error_while_streaming_before_headers_are_sent_becomes_a_500() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            raise ValueError("secret")
            yield b""

        return body()

    start_response = StartResponseRecorder()
    body = ErrorPageMiddleware(app)(EnvironBuilder("/").get_environ(), start_response)
    page = b"".join(body)
    close_body(body)
    assert start_response.statuses == ["200 OK", "500 Internal Server Error"]
    # PEP 3333: a second call must carry exc_info, so a server that already
    # sent the headers can re-raise instead.
    assert start_response.calls[1][2] is not None
    assert b"Something went wrong" in page
    assert b"secret" not in page


def test_requests_are_logged(browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sample_wsgi_app"):
        browser.text("/items?page=2")
        browser.get("/items/999")
        browser.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "sample_wsgi_app"]
    assert any(re.fullmatch(r"GET /items\?page=2 200 \d+ bytes [\d.]+ ms", line) for line in lines)
    assert any(re.fullmatch(r"GET /items/999 404 \d+ bytes [\d.]+ ms", line) for line in lines)


# Security: keys, session lifetime and logout, CSRF, who may see and change what.

FORGED_ADMIN = {"user_id": 1, "generation": 0, "csrf_token": "forged"}


def forged_with_the_dev_key() -> str:
    """What anyone who has read settings.py can sign: an admin session."""
    return dump_session(FORGED_ADMIN, DEV_SECRET_KEY)


def assert_refused_as_anonymous(browser: Browser, cookie: str) -> None:
    """``cookie`` logs nobody in: the legacy form and the JSON API both refuse it."""
    browser.client.set_cookie(SESSION_COOKIE, cookie)
    new_item = browser.get("/items/new")
    assert new_item.status_code == 303 and new_item.location.startswith("/login")
    browser.client.set_cookie(SESSION_COOKIE, cookie)
    created = browser.post(
        "/api/items", json={"title": "Planted"}, headers={"X-CSRF-Token": "forged"}
    )
    assert created.status_code in (401, 403), created.status
    assert "Planted" not in browser.text("/items")


def test_a_cookie_forged_with_the_published_key_is_refused(browser: Browser) -> None:
    assert_refused_as_anonymous(browser, forged_with_the_dev_key())


def test_without_a_key_the_app_refuses_to_serve(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAMPLE_SECRET_KEY", raising=False)
    monkeypatch.delenv("SAMPLE_DEV_KEY", raising=False)
    app = create_app(data_dir=data_dir)
    assert app.settings.secret_key is None
    browser = Browser(app)
    try:
        browser.client.set_cookie(SESSION_COOKIE, forged_with_the_dev_key())
        for path in ("/items", "/items/new", "/health"):
            refused = browser.get(path)
            assert refused.status_code == 503, path
            assert "SAMPLE_SECRET_KEY" in refused.get_data(as_text=True)
        assert browser.post("/api/items", json={"title": "x"}).status_code == 503
    finally:
        browser.close()
        app.close()


def test_the_development_key_is_used_only_when_asked_for_and_warned_about(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SAMPLE_SECRET_KEY", raising=False)
    monkeypatch.setenv("SAMPLE_DEV_KEY", "1")
    app = create_app(data_dir=data_dir)
    assert app.settings.uses_dev_key
    browser = Browser(app)
    try:
        with caplog.at_level(logging.WARNING, logger="sample_wsgi_app"):
            assert browser.get("/items").status_code == 200
        assert any("anyone can forge them" in r.getMessage() for r in caplog.records)
    finally:
        browser.close()
        app.close()


def test_init_db_keeps_a_random_key_of_its_own_in_the_data_directory(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAMPLE_SECRET_KEY", raising=False)
    monkeypatch.delenv("SAMPLE_DEV_KEY", raising=False)
    init_db(data_dir)
    key_file = data_dir / "secret_key"
    key = key_file.read_text().strip()
    assert len(key) >= 40 and key != DEV_SECRET_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600
    init_db(data_dir)  # made once, then kept: sessions survive a restart
    assert key_file.read_text().strip() == key
    assert Settings.from_env(data_dir).secret_key == key
    other = data_dir.parent / "other"
    init_db(other)
    assert (other / "secret_key").read_text().strip() != key


def test_sessions_expire_on_the_server(admin: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = admin.client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    issued = load_session(cookie.value, SECRET)["issued_at"]
    assert abs(issued - time.time()) < 60
    later = issued + sessions.SESSION_MAX_AGE + 1
    monkeypatch.setattr(sessions.time, "time", lambda: later)  # the browser kept it anyway
    assert_refused_as_anonymous(admin, cookie.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": 1, "generation": 0},  # no issue time
        {"user_id": 1, "generation": 0, "issued_at": "0"},
        {"user_id": 1, "generation": 0, "issued_at": 10**12},  # issued in the future
        {"user_id": 1, "generation": 0, "issued_at": True},  # a bool is not a time either
    ],
)
def test_sessions_without_a_believable_issue_time_are_refused(payload: dict[str, Any]) -> None:
    # Signed by hand, as the format in sessions.py describes: dump_session would stamp it.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(sessions.canonical_json(payload).encode())
    signature = b64(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest())
    assert load_session(f"{body}.{signature}", SECRET) == {}
    assert load_session(dump_session({"user_id": 1}, SECRET), SECRET)["user_id"] == 1


def test_logout_ends_every_session_issued_before_it(sample: SampleApp) -> None:
    laptop, phone = Browser(sample), Browser(sample)
    try:
        for browser in (laptop, phone):
            assert browser.login().status_code == 303
        saved = laptop.client.get_cookie(SESSION_COOKIE)
        on_phone = phone.client.get_cookie(SESSION_COOKIE)
        assert saved is not None and on_phone is not None
        token = laptop.session()["csrf_token"]
        assert laptop.post("/logout", data={"csrf_token": token}).status_code == 303
        # A copy of the cookie saved before the logout is worth nothing, on any device.
        assert_refused_as_anonymous(laptop, saved.value)
        assert_refused_as_anonymous(phone, on_phone.value)
        assert laptop.login().status_code == 303  # a new login works
        assert laptop.get("/items/new").status_code == 200
    finally:
        laptop.close()
        phone.close()


def test_an_old_database_gains_the_new_user_columns(tmp_path: Path) -> None:
    path = tmp_path / "sample.sqlite3"
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,"
        " password_hash TEXT NOT NULL, created_at TEXT NOT NULL);"
        "INSERT INTO users VALUES (1, 'admin', 'x', '2024-01-01T00:00:00Z');"
        "INSERT INTO users VALUES (2, 'bob', 'x', '2024-01-01T00:00:00Z');"
    )
    connection.close()
    db = Database(path)
    try:
        admin, bob = queries.get_user(db, 1), queries.get_user(db, 2)
        assert admin == queries.User(1, "admin", is_admin=True, session_generation=0)
        assert bob == queries.User(2, "bob", is_admin=False, session_generation=0)
    finally:
        db.close()


@pytest.mark.parametrize(
    "content_type",
    ["Application/X-WWW-Form-Urlencoded", "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8"],
)
def test_csrf_is_checked_whatever_the_case_of_the_media_type(
    browser: Browser, content_type: str
) -> None:
    response = browser.post(
        "/login", data="username=admin&password=admin", content_type=content_type
    )
    assert response.status_code == 403
    assert browser.session().get("user_id") is None


def test_attachments_need_a_login(admin: Browser, browser: Browser, sample: SampleApp) -> None:
    token = admin.session()["csrf_token"]
    upload = {"csrf_token": token, "file": (io.BytesIO(b"private"), "a.txt", "text/plain")}
    assert admin.post("/items/1/attachments", data=upload).status_code == 303
    assert admin.get("/attachments/1").get_data() == b"private"
    anonymous = Browser(sample)
    try:
        refused = anonymous.get("/attachments/1")
        assert refused.status_code == 303 and refused.location.startswith("/login")
        assert b"private" not in refused.get_data()
    finally:
        anonymous.close()


@pytest.fixture
def bob(sample: SampleApp) -> Iterator[Browser]:
    """A second, ordinary user, logged in."""
    queries.create_user(sample.db, "bob", "bob-password")
    browser = Browser(sample)
    assert browser.login("bob", "bob-password").status_code == 303
    yield browser
    browser.close()


def test_only_the_owner_or_an_admin_changes_an_item(
    bob: Browser, admin: Browser, sample: SampleApp
) -> None:
    token = bob.session()["csrf_token"]
    # Item 1 is the admin's: bob sees it, without the controls, and may not change it.
    assert 'id="edit-link"' not in bob.text("/items/1")
    assert bob.get("/items/1/edit").status_code == 403
    edit = {"title": "Defaced", "body": "", "csrf_token": token}
    assert bob.post("/items/1/edit", data=edit).status_code == 403
    assert bob.post("/items/1/delete", data={"csrf_token": token}).status_code == 403
    upload = {"csrf_token": token, "file": (io.BytesIO(b"x"), "x.txt", "text/plain")}
    assert bob.post("/items/1/attachments", data=upload).status_code == 403
    item = queries.get_item(sample.db, 1)
    assert item is not None and item.title == "Invoice #1"
    assert queries.list_attachments(sample.db, 1) == []
    # His own item is his to change; the admin may change it too.
    created = bob.post("/items/new", data={"title": "Bob's", "body": "", "csrf_token": token})
    own = created.location
    assert 'id="edit-link"' in bob.text(own)
    assert bob.post(f"{own}/edit", data={**edit, "title": "Bob's, edited"}).status_code == 303
    admin_token = admin.session()["csrf_token"]
    assert 'id="edit-link"' in admin.text(own)
    assert admin.post(f"{own}/delete", data={"csrf_token": admin_token}).status_code == 303
    assert admin.get(own).status_code == 404


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_never_start_a_formula(browser: Browser, sample: SampleApp, start: str) -> None:
    formula = f'{start}HYPERLINK("http://attacker.example","x")'
    queries.create_item(sample.db, title=formula, body=f"{start}1+1", owner="admin")
    rows = list(csv.reader(io.StringIO(browser.get("/export.csv").get_data(as_text=True))))
    assert rows[-1][1] == "'" + formula
    assert rows[-1][2] == f"'{start}1+1"
    assert rows[2][1] == "Roadmap #2"  # ordinary cells stay as they are


# The same checks on the migrated app, where /api/me reads the cookie on the event loop.


@pytest.fixture
def migrated(sample: SampleApp) -> Iterator[Any]:
    from sample_wsgi_app.modern import create_application

    wrap = sample.wrap
    sample.wrap = lambda inner, **options: validator(wrap(inner, **options))  # type: ignore[method-assign]
    application = create_application(sample)
    yield application
    application.app.pool.shutdown()


@pytest.mark.parametrize("bad", ["1_000-0", "1" * 21 + "-0", "tomorrow"])
def test_a_bad_last_event_id_gets_400_with_the_sentence_never_a_500(
    migrated: Any, bad: str
) -> None:
    """Values Redis refuses as stream ids (one int() accepts, one past 64 bits) are the
    client's mistake, said as such, before the event stream opens."""
    from tests.asgi import Client as ASGIClient
    from tests.asgi import http_scope

    client = ASGIClient()
    scope = http_scope("/events/items", headers=[(b"last-event-id", bad.encode())])
    asyncio.run(client.run(migrated, scope))
    assert client.status == 400
    assert f'Event id "{bad}" must be in format'.encode() in client.body


async def async_login(http: httpx.AsyncClient, username: str = "admin") -> str:
    """Log in through the legacy form; returns the session cookie's value."""
    page = await http.get("/login")
    match = TOKEN_RE.search(page.text)
    assert match is not None
    form = {"username": username, "password": username, "csrf_token": match.group(1)}
    assert (await http.post("/login", data=form)).status_code == 303
    return http.cookies[SESSION_COOKIE]


async def assert_anonymous_everywhere(http: httpx.AsyncClient, cookie: str) -> None:
    """``cookie`` logs nobody in: not on the async /api/me, the legacy form, or the API."""
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    http.cookies.clear()  # only the cookie under test is sent
    assert (await http.get("/api/me", headers=headers)).json() == {"user": None}
    http.cookies.clear()
    new_item = await http.get("/items/new", headers=headers)
    assert new_item.status_code == 303 and new_item.headers["location"].startswith("/login")
    http.cookies.clear()
    headers["X-CSRF-Token"] = "forged"
    created = await http.post("/api/items", json={"title": "x"}, headers=headers)
    assert created.status_code in (401, 403)


def on_loopback(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def test_migrated_app_refuses_a_cookie_forged_with_the_published_key(migrated: Any) -> None:
    async def main() -> None:
        async with on_loopback(migrated) as http:
            await assert_anonymous_everywhere(http, forged_with_the_dev_key())

    asyncio.run(main())


@pytest.mark.parametrize("logout", ["legacy /logout", "async /api/logout"])
def test_migrated_app_refuses_a_cookie_saved_before_logout(migrated: Any, logout: str) -> None:
    async def main() -> None:
        async with on_loopback(migrated) as http:
            saved = await async_login(http)
            assert (await http.get("/api/me")).json() == {"user": "admin"}
            token = load_session(saved, SECRET)["csrf_token"]
            if logout.startswith("legacy"):
                response = await http.post("/logout", data={"csrf_token": token})
                assert response.status_code == 303
            else:
                response = await http.post("/api/logout", headers={"X-CSRF-Token": token})
                assert response.status_code == 200
            await assert_anonymous_everywhere(http, saved)

    asyncio.run(main())


def test_migrated_app_expires_sessions_on_the_server(
    migrated: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with on_loopback(migrated) as http:
            saved = await async_login(http)
            later = time.time() + sessions.SESSION_MAX_AGE + 1
            monkeypatch.setattr(sessions.time, "time", lambda: later)
            await assert_anonymous_everywhere(http, saved)

    asyncio.run(main())


def test_migrated_app_without_a_key_fails_to_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sample_wsgi_app.modern import create_application

    monkeypatch.delenv("SAMPLE_SECRET_KEY", raising=False)
    monkeypatch.delenv("SAMPLE_DEV_KEY", raising=False)
    application = create_application(create_app(data_dir=data_dir))
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "lifespan.startup"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)

    logging.getLogger("bridge").disabled = True  # the hook's traceback is expected
    try:
        asyncio.run(main())
    finally:
        logging.getLogger("bridge").disabled = False
        application.app.pool.shutdown()
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "SAMPLE_SECRET_KEY" in sent[0]["message"]
