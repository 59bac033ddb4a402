"""An unmodified Flask application answers the same under gunicorn and under bridge on uvicorn."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Differ

pytestmark = pytest.mark.live

MIB = 1024 * 1024


def payload(size: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * 128  # 4 KiB
    return (block * (size // len(block) + 1))[:size]


def multipart(files: dict[str, tuple[str, bytes, str]], data: dict[str, str]) -> dict[str, object]:
    """Encode a multipart body once, so both servers get the same bytes and boundary."""
    request = httpx.Request("POST", "http://127.0.0.1/", files=files, data=data)
    return {"content": request.read(), "headers": {"content-type": request.headers["content-type"]}}


def test_pages_errors_and_methods(flask_diff: Differ) -> None:
    assert flask_diff.same("GET", "/").status == 200
    assert flask_diff.same("HEAD", "/").body == ""
    assert flask_diff.same("GET", "/missing").status == 404
    assert flask_diff.same("POST", "/").status == 405  # with an Allow header
    assert flask_diff.same("GET", "/boom").status == 500
    assert flask_diff.same("GET", "/empty").status == 204
    assert flask_diff.same("DELETE", "/empty").status == 204
    assert flask_diff.same("OPTIONS", "/form").status == 200


def test_form_post(flask_diff: Differ) -> None:
    flask_diff.same("GET", "/form")
    seen = flask_diff.same(
        "POST",
        "/form?source=t%C3%A9st&x=1&x=2",
        data={"name": "Zoë & co", "tag": ["a+b", "c=d"], "empty": ""},
    )
    assert json.loads(seen.body)["form"]["name"] == ["Zoë & co"]


def test_json(flask_diff: Differ) -> None:
    doc = {"city": "Zürich", "n": [1, 2.5, None, True], "nested": {"emoji": "🚲"}}
    seen = flask_diff.same("POST", "/json", json=doc)
    assert json.loads(seen.body)["received"] == doc
    as_json = {"content-type": "application/json"}
    assert flask_diff.same("POST", "/json", content=b"{not json", headers=as_json).status == 400
    as_text = {"content-type": "text/plain"}
    assert flask_diff.same("POST", "/json", content=b"[]", headers=as_text).status == 415


def test_multipart_upload_of_several_mib(flask_diff: Differ) -> None:
    big = payload(4 * MIB, b"big")
    small = payload(1000, b"small")
    body = multipart(
        {
            "report": ("rapport d'été.bin", big, "application/octet-stream"),
            "notes": ("notes.txt", small, "text/plain"),
        },
        {"title": "Quarterly ✓"},
    )
    seen = flask_diff.same("POST", "/upload", **body)
    files = json.loads(seen.body)["files"]
    assert files["report"][0]["sha256"] == hashlib.sha256(big).hexdigest()


def test_body_with_content_length(flask_diff: Differ) -> None:
    data = payload(3 * MIB + 17, b"fixed")
    seen = flask_diff.same("POST", "/body", content=data)
    assert json.loads(seen.body)["length"] == len(data)


def test_chunked_upload(flask_diff: Differ) -> None:
    data = payload(3 * MIB + 5, b"chunked")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    # A generator has no length, so httpx sends Transfer-Encoding: chunked; each server
    # needs a fresh generator.
    seen = flask_diff.same("POST", "/body", per_server=lambda name, last: {"content": chunks()})
    assert json.loads(seen.body) == {
        "chunked": True,
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_request_headers_and_cgi_variables(flask_diff: Differ) -> None:
    headers = [
        (b"X_Under", b"dropped by both: it would spoof X-Under"),
        (b"Accept-Language", b"fr-CH, fr;q=0.9"),
        (b"X-Latin", "caf\xe9".encode("latin-1")),
    ]
    seen = flask_diff.same("GET", "/headers?a=1&b=%20&c", headers=headers)
    http = json.loads(seen.body)["http"]
    assert "HTTP_X_UNDER" not in http
    assert http["HTTP_X_LATIN"] == "caf\xe9"


def test_repeated_header_fields(flask_diff: Differ) -> None:
    """gunicorn (like wsgiref) joins repeated fields with "," and no space."""
    seen = flask_diff.same("GET", "/headers", headers=[(b"X-Dup", b"one"), (b"X-Dup", b"two")])
    assert json.loads(seen.body)["http"]["HTTP_X_DUP"] == "one,two"


def test_repeated_cookie_headers_are_one_cookie_list_in_bridge(flask_diff: Differ) -> None:
    """A deliberate difference: bridge joins Cookie fields with "; " (RFC 6265 5.4, and
    RFC 9113 8.2.3 for HTTP/2), so the app sees both cookies; gunicorn joins with ","
    and the first cookie swallows the second."""
    cookies = [(b"Cookie", b"a=1"), (b"Cookie", b"b=2")]
    gunicorn, bridge = flask_diff.send("GET", "/cookies", headers=cookies)
    assert gunicorn.json() == {"cookies": {"a": "1,b=2"}}
    assert bridge.json() == {"cookies": {"a": "1", "b": "2"}}


def test_cookies(flask_diff: Differ) -> None:
    flask_diff.same("GET", "/cookies/set?flavour=oatmeal%20raisin&colour=blue")
    for client in flask_diff.clients.values():
        client.cookies.set("sent", "by-client", domain="127.0.0.1")
    seen = flask_diff.same("GET", "/cookies")
    assert json.loads(seen.body)["cookies"]["flavour"] == "oatmeal raisin"
    flask_diff.same("GET", "/cookies/delete")
    assert json.loads(flask_diff.same("GET", "/cookies").body)["cookies"] == {}


def test_session_login_and_logout(flask_diff: Differ) -> None:
    assert flask_diff.same("GET", "/me").status == 401
    assert flask_diff.same("POST", "/login", data={"user": "Ada Lovelace"}).status == 302
    assert flask_diff.same("GET", "/me").body == "Hello, Ada Lovelace! Visit 1."
    assert flask_diff.same("GET", "/me").body == "Hello, Ada Lovelace! Visit 2."
    assert flask_diff.same("POST", "/logout").status == 303
    assert flask_diff.same("GET", "/me").status == 401


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects(flask_diff: Differ, code: int) -> None:
    assert flask_diff.same("GET", f"/redirect/{code}").status == code
    assert flask_diff.same("GET", f"/redirect/{code}?external=1").status == code


def test_redirect_chain_followed(flask_diff: Differ) -> None:
    gunicorn, bridge = flask_diff.send("GET", "/redirect/chain/3", follow_redirects=True)
    assert [r.status_code for r in bridge.history] == [r.status_code for r in gunicorn.history]
    assert [r.headers["location"] for r in bridge.history] == [
        r.headers["location"] for r in gunicorn.history
    ]
    assert flask_diff.compare(gunicorn, bridge, "GET").status == 200


def test_streaming_response(flask_diff: Differ) -> None:
    flask_diff.same("GET", "/stream?lines=50")
    # About 2.5 MiB in many small chunks: past bridge's response buffer, so it streams
    # with backpressure.
    seen = flask_diff.same("GET", "/stream?lines=40000&size=32")
    assert isinstance(seen.body, str) and seen.body.startswith("<")
    flask_diff.same("HEAD", "/stream?lines=5")


def test_large_download(flask_diff: Differ) -> None:
    flask_diff.same("GET", "/big?mib=4")


def test_send_file_and_conditional_get(flask_diff: Differ) -> None:
    etag = flask_diff.conditional_get("/download", other_etag='"other"')
    flask_diff.same("HEAD", "/download", headers={"if-none-match": etag})


def test_range_requests(flask_diff: Differ) -> None:
    assert flask_diff.same("GET", "/download", headers={"range": "bytes=0-99"}).status == 206
    assert flask_diff.same("GET", "/download", headers={"range": "bytes=-1000"}).status == 206
    assert flask_diff.same("GET", "/download", headers={"range": "bytes=9999999-"}).status == 416


def test_attachment_with_non_ascii_name(flask_diff: Differ) -> None:
    seen = flask_diff.same("GET", "/download/attachment")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9" in seen.headers["content-disposition"][0]


@pytest.mark.parametrize(
    "url",
    [
        "/wiki/Z%C3%BCrich",
        "/wiki/%E6%9D%B1%E4%BA%AC?q=%E6%97%A5%E6%9C%AC&q=2&empty=&flag",
        "/wiki/caf%C3%A9%20cr%C3%A8me?s=a+b%2Bc&amp=%26&pct=%25",
        "/wiki/a%2Fb",  # an encoded slash is a slash to both: no route matches
        "/wiki/%F0%9F%9A%B2?emoji=%F0%9F%9A%B2",
        "/wiki/latin%E9?bad=%E9",  # not UTF-8: werkzeug's replacement decoding in both
    ],
)
def test_non_ascii_paths_and_query_strings(flask_diff: Differ, url: str) -> None:
    flask_diff.same("GET", url)


@pytest.mark.xfail(
    reason="ASGI's http.response.start carries no reason phrase, so a custom one is "
    "replaced by the standard phrase (or none) for the code.",
    strict=True,
)
def test_custom_reason_phrase(flask_diff: Differ) -> None:
    gunicorn, bridge = flask_diff.send("GET", "/custom-status")
    assert flask_diff.compare(gunicorn, bridge, "GET").status == 299
    assert (bridge.reason_phrase, gunicorn.reason_phrase) == ("Custom Thing", "Custom Thing")
