"""An unmodified Django project answers the same under gunicorn and under bridge on uvicorn."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import DJANGO_ADMIN_PASSWORD, DJANGO_ADMIN_USER, Differ

pytestmark = pytest.mark.live

MIB = 1024 * 1024
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([A-Za-z0-9]{64})"')


def payload(size: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * 128  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def with_csrf(fields: dict[str, str]) -> Any:
    """``per_server`` kwargs: ``fields`` plus the CSRF token from that server's last page."""

    def build(name: str, last: httpx.Response | None) -> dict[str, Any]:
        assert last is not None, "fetch a page with a form first"
        found = CSRF_INPUT.search(last.text)
        assert found, f"{name}'s last page has no csrfmiddlewaretoken"
        return {"data": {**fields, "csrfmiddlewaretoken": found.group(1)}}

    return build


def test_admin_login_session_and_logout(django_diff: Differ) -> None:
    seen = django_diff.same("GET", "/admin/")
    assert (seen.status, seen.headers["location"]) == (302, ["/admin/login/?next=/admin/"])
    seen = django_diff.same("GET", "/admin/login/?next=/admin/")
    assert seen.headers["set-cookie"][0].startswith("csrftoken=<csrf-secret>;")
    credentials = {
        "username": DJANGO_ADMIN_USER,
        "password": DJANGO_ADMIN_PASSWORD,
        "next": "/admin/",
    }
    seen = django_diff.same("POST", "/admin/login/?next=/admin/", with_csrf(credentials))
    assert (seen.status, seen.headers["location"]) == (302, ["/admin/"])
    seen = django_diff.same("GET", "/admin/")
    assert isinstance(seen.body, str)
    assert f"<strong>{DJANGO_ADMIN_USER}</strong>" in seen.body
    seen = django_diff.same("GET", "/admin/auth/user/")
    assert isinstance(seen.body, str) and "grace@example.com" in seen.body
    seen = django_diff.same("POST", "/admin/logout/", with_csrf({}))
    assert seen.status == 200
    assert django_diff.same("GET", "/admin/").status == 302


def test_admin_login_with_a_wrong_password(django_diff: Differ) -> None:
    django_diff.same("GET", "/admin/login/")
    wrong = {"username": DJANGO_ADMIN_USER, "password": "not it"}
    seen = django_diff.same("POST", "/admin/login/", with_csrf(wrong))
    assert seen.status == 200
    assert isinstance(seen.body, str) and "errornote" in seen.body


def test_form_with_csrf(django_diff: Differ) -> None:
    django_diff.same("GET", "/order/")
    fields = {"name": "Crème brûlée", "quantity": "3", "note": "<b>extra</b> & more"}
    seen = django_diff.same("POST", "/order/", with_csrf(fields))
    assert isinstance(seen.body, str) and "3 \u00d7 Crème brûlée" in seen.body
    django_diff.same("GET", "/order/")
    seen = django_diff.same("POST", "/order/", with_csrf({"name": "", "quantity": "0"}))
    assert isinstance(seen.body, str) and "errorlist" in seen.body


def test_form_without_csrf_token_is_refused(django_diff: Differ) -> None:
    assert django_diff.same("POST", "/order/", data={"name": "x", "quantity": "1"}).status == 403


def test_json(django_diff: Differ) -> None:
    doc = {"city": "Zürich", "n": [1, 2.5, None, False], "deep": {"emoji": "🚲"}}
    seen = django_diff.same("POST", "/api/echo/", json=doc)
    assert json.loads(seen.body)["received"] == doc
    assert django_diff.same("POST", "/api/echo/", content=b"{oops").status == 400
    django_diff.same("GET", "/api/echo/?a=1&a=2&b=%C3%A9")


def test_multipart_upload_of_several_mib(django_diff: Differ) -> None:
    big = payload(4 * MIB, b"django-big")
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/upload/",
        files={"report": ("données.bin", big, "application/octet-stream")},
        data={"title": "Quarterly ✓"},
    )
    body = request.read()  # encoded once: both servers get the same boundary
    headers = {"content-type": request.headers["content-type"]}
    seen = django_diff.same("POST", "/upload/", content=body, headers=headers)
    assert json.loads(seen.body)["files"]["report"][0]["sha256"] == hashlib.sha256(big).hexdigest()


def test_body_with_content_length(django_diff: Differ) -> None:
    data = payload(2 * MIB + 3, b"django-fixed")
    seen = django_diff.same("POST", "/raw/", content=data)
    assert json.loads(seen.body)["length"] == len(data)


def test_chunked_upload(django_diff: Differ) -> None:
    """Django reads CONTENT_LENGTH bytes and ignores wsgi.input_terminated: both see no body."""
    data = payload(1 * MIB, b"django-chunked")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    seen = django_diff.same("POST", "/raw/", per_server=lambda name, last: {"content": chunks()})
    assert json.loads(seen.body)["length"] == 0


def test_streaming_response(django_diff: Differ) -> None:
    django_diff.same("GET", "/stream/?lines=20")
    seen = django_diff.same("GET", "/stream/?lines=30000")  # about 1.7 MiB, past the buffer
    assert isinstance(seen.body, str) and seen.body.startswith("<")
    django_diff.same("HEAD", "/stream/?lines=3")


def test_file_response_and_conditional_get(django_diff: Differ) -> None:
    django_diff.conditional_get("/report/", other_etag='"x"')


@pytest.mark.parametrize(
    "url",
    [
        "/wiki/Z%C3%BCrich/",
        "/wiki/%E6%9D%B1%E4%BA%AC/?q=%E6%97%A5%E6%9C%AC&q=2&empty=&flag",
        "/wiki/caf%C3%A9%20cr%C3%A8me/?s=a+b%2Bc&amp=%26&pct=%25",
        "/wiki/%F0%9F%9A%B2",  # no trailing slash: CommonMiddleware redirects
        "/wiki/latin%E9/?bad=%E9",  # not UTF-8
        "/to-wiki/?name=S%C3%A3o%20Paulo",  # a redirect to a non-ASCII path
    ],
)
def test_non_ascii_paths_and_query_strings(django_diff: Differ, url: str) -> None:
    django_diff.same("GET", url)


def test_not_found_and_method_not_allowed(django_diff: Differ) -> None:
    assert django_diff.same("GET", "/nowhere/").status == 404
    assert django_diff.same("GET", "/upload/").status == 405
