"""``bridge.compare``: two responses, compared as a client would notice, and kept safely."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bridge.shadow.compare import (
    MAX_DIFFERENCES,
    REDACTED,
    Captured,
    Difference,
    compare,
    decode_body,
    first_difference,
    kept,
)

JSON = [(b"content-type", b"application/json")]
HTML = [(b"content-type", b"text/html; charset=utf-8")]


def json_response(data: Any, status: int = 200, headers: Any = None) -> Captured:
    return Captured(status, headers or JSON, json.dumps(data).encode())


def test_json_bodies_are_compared_as_structures() -> None:
    legacy = Captured(200, JSON, b'{"id": 1, "tags": ["a", "b"], "price": 2}')
    shadow = Captured(200, JSON, b'{"tags":["a","b"],"price":2.0,"id":1}')
    assert compare(legacy, shadow) == []


def test_one_differing_field_is_the_one_difference() -> None:
    legacy = json_response({"id": 1, "title": "Tea", "owner": {"name": "ada", "id": 7}})
    shadow = json_response({"id": 1, "title": "Tea", "owner": {"name": "Ada", "id": 7}})
    assert compare(legacy, shadow) == [Difference("body $.owner.name", '"ada"', '"Ada"')]


def test_absent_keys_list_items_and_odd_keys_are_named_by_path() -> None:
    legacy = json_response({"items": [1, 2, 3], "a b": 1, "gone": True})
    shadow = json_response({"items": [1, 5], "a b": 1, "new": None})
    assert compare(legacy, shadow) == [
        Difference("body $.items[1]", "2", "5"),
        Difference("body $.items[2]", "3", "(absent)"),
        Difference("body $.gone", "true", "(absent)"),
        Difference("body $.new", "(absent)", "null"),
    ]
    assert compare(json_response({"a b": 1}), json_response({"a b": 2})) == [
        Difference('body $["a b"]', "1", "2")
    ]


def test_true_is_not_one_though_one_is_one_point_zero() -> None:
    assert compare(json_response({"x": True}), json_response({"x": 1})) == [
        Difference("body $.x", "true", "1")
    ]
    assert compare(json_response({"x": 1}), json_response({"x": 1.0})) == []


def test_status_and_chosen_headers_are_compared_case_insensitively() -> None:
    legacy = Captured(200, [(b"Content-Type", b"text/plain"), (b"X-Id", b"1")], b"ok")
    shadow = Captured(201, [(b"content-type", b"text/html")], b"ok")
    assert compare(legacy, shadow, headers=("content-type", "x-id")) == [
        Difference("status", "200", "201"),
        Difference("header content-type", "text/plain", "text/html"),
        Difference("header x-id", "1", "(absent)"),
    ]
    # Headers not chosen do not count.
    assert compare(legacy, Captured(200, [(b"content-type", b"text/plain")], b"ok")) == []


def test_a_secret_header_is_compared_but_its_values_never_shown() -> None:
    legacy = Captured(200, [(b"set-cookie", b"session=abc123")], b"")
    shadow = Captured(200, [(b"set-cookie", b"session=zzz999")], b"")
    (difference,) = compare(legacy, shadow, headers=("set-cookie",))
    assert difference.where == "header set-cookie"
    assert "abc123" not in str(difference) and "zzz999" not in str(difference)
    assert difference.legacy == REDACTED


def test_text_bodies_show_where_they_first_differ() -> None:
    legacy = Captured(200, HTML, b"<h1>Items</h1>\n<p>3 items</p>\n")
    shadow = Captured(200, HTML, b"<h1>Items</h1>\n<p>4 items</p>\n")
    (difference,) = compare(legacy, shadow)
    assert difference.where == "body line 2 col 4"
    assert "3 items" in difference.legacy and "4 items" in difference.shadow


def test_binary_bodies_are_compared_as_bytes() -> None:
    octets = [(b"content-type", b"application/octet-stream")]
    assert decode_body(Captured(200, octets, b"\x00\x01")) == b"\x00\x01"
    (difference,) = compare(Captured(200, octets, b"\x00\x01"), Captured(200, octets, b"\x00\x02"))
    assert difference.where == "body byte 1"


def test_invalid_json_is_compared_as_text() -> None:
    legacy = Captured(200, JSON, b"{not json")
    assert decode_body(legacy) == "{not json"
    assert compare(legacy, Captured(200, JSON, b"{not json")) == []


def test_a_normaliser_masks_what_may_differ() -> None:
    def normalise(body: Any) -> Any:
        if isinstance(body, dict):
            return {**body, "at": "<time>", "tags": sorted(body["tags"])}
        return re.sub(r'name="csrf" value="[^"]*"', 'name="csrf"', body)

    legacy = json_response({"id": 1, "at": "12:00:01", "tags": ["b", "a"]})
    shadow = json_response({"id": 1, "at": "12:00:02", "tags": ["a", "b"]})
    assert compare(legacy, shadow) != []
    assert compare(legacy, shadow, normalise=normalise) == []
    page = Captured(200, HTML, b'<input name="csrf" value="one">')
    other = Captured(200, HTML, b'<input name="csrf" value="two">')
    assert compare(page, other, normalise=normalise) == []


def test_differences_are_bounded_however_many_there_are() -> None:
    legacy = json_response({f"k{i}": i for i in range(500)})
    shadow = json_response({f"k{i}": -i - 1 for i in range(500)})
    found = compare(legacy, shadow)
    assert len(found) == MAX_DIFFERENCES + 1
    assert found[-1].legacy.startswith("... and ")


def test_long_values_are_truncated() -> None:
    legacy = json_response({"x": "a" * 10_000})
    shadow = json_response({"x": "b" * 10_000})
    (difference,) = compare(legacy, shadow)
    assert len(difference.legacy) < 300 and "chars)" in difference.legacy


@pytest.mark.parametrize("name", ["Set-Cookie", "Cookie", "Authorization"])
def test_kept_responses_carry_no_credentials_and_a_bounded_body(name: str) -> None:
    secret = b"s3cret-value"
    response = Captured(
        200, [(name.encode(), secret), (b"content-type", b"text/plain")], b"x" * 50_000
    )
    report = kept(response, 1024, headers=(name.lower(), "content-type"), show_bodies=True)
    assert secret.decode() not in json.dumps(report)
    assert [name.lower(), REDACTED] in report["headers"]
    assert len(report["body"]) < 1100 and report["body"].endswith("(50000 bytes)")


def test_a_kept_response_drops_the_values_of_headers_not_compared_and_its_body() -> None:
    response = Captured(
        302,
        [(b"Content-Type", b"text/html"), (b"Location", b"/reset?token=t0ken"),
         (b"X-Session-Token", b"abc123")],
        b"api_key=AKIA-secret",
    )  # fmt: skip
    report = kept(response, 1024, headers=("content-type",), show_bodies=False)
    assert report == {
        "status": 302,
        "headers": [["content-type", "text/html"]],
        "other_headers": ["location", "x-session-token"],
        "body": None,
        "body_bytes": 19,
    }


def test_without_show_bodies_a_difference_says_where_and_what_kind_never_the_value() -> None:
    legacy = json_response({"user": {"api_key": "AKIA-legacy", "age": 41, "tags": [1]}})
    shadow = json_response({"user": {"api_key": "AKIA-shadow!", "age": 42, "tags": {}}})
    found = compare(legacy, shadow, show_bodies=False)
    assert found == [
        Difference("body $.user.api_key", "a string of 11 chars", "a string of 12 chars"),
        Difference("body $.user.age", "a number", "a number"),
        Difference("body $.user.tags", "an array of 1 items", "an object of 0 keys"),
    ]
    text = compare(Captured(200, HTML, b"key=AKIA-1"), Captured(200, HTML, b"key=AKIA-2"),
                   show_bodies=False)  # fmt: skip
    ten = "a string of 10 chars"
    assert text == [Difference("body line 1 col 10", ten, ten)]
    assert "AKIA" not in repr(found + text)


def test_kinds_group_differences_by_place_with_list_indexes_as_a_star() -> None:
    assert Difference("body $.items[3].price", "1", "2").kind == "body $.items[*].price"
    assert Difference("status", "200", "500").kind == "status 200 -> 500"
    assert Difference("body line 4 col 2", "a", "b").kind == "body (text)"
    assert Difference("body byte 9", "a", "b").kind == "body (bytes)"
    assert Difference("header content-type", "a", "b").kind == "header content-type"


def test_noise_kinds_are_left_out_of_a_comparison() -> None:
    legacy = json_response({"at": "12:00:01", "rows": [{"id": 1, "seen": 5}, {"id": 2, "seen": 6}]})
    shadow = json_response({"at": "12:00:09", "rows": [{"id": 1, "seen": 7}, {"id": 3, "seen": 8}]})
    noise = ("body $.at", "body $.rows[*].seen")
    assert compare(legacy, shadow, noise=noise) == [Difference("body $.rows[1].id", "2", "3")]


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_995_deep_document_is_compared_without_recursion_errors() -> None:
    legacy = Captured(200, JSON, ('{"a":' * 995 + "1" + "}" * 995).encode())
    shadow = Captured(200, JSON, ('{"a":' * 995 + "2" + "}" * 995).encode())
    # Parsed where the stack allows (then walked), else compared as text: never an error.
    (difference,) = compare(legacy, shadow)
    assert difference.where.startswith("body")
    assert "1" in difference.legacy and "2" in difference.shadow
    # The walk has a stack of its own: structures deeper than Python's recursion limit.
    deep = compare(json_response(1), json_response(2), normalise=lambda b: nested(5000, b))
    assert len(deep) == 1 and (deep[0].legacy, deep[0].shadow) == ("1", "2")
    wide = compare(json_response(1), json_response(2), normalise=lambda b: [nested(5000, b)])
    assert len(wide) == 1 and wide[0].where.startswith("body $[0].a.a")
    assert len(wide[0].where) < 300, "a place is truncated like a value"


def test_json_deeper_than_the_parser_goes_is_compared_as_text() -> None:
    body = ("[" * 100_000 + "]" * 100_000).encode()
    assert isinstance(decode_body(Captured(200, JSON, body)), str)
    other = ("[" * 100_000 + "1" + "]" * 100_000).encode()
    (difference,) = compare(Captured(200, JSON, body), Captured(200, JSON, other))
    assert difference.where == "body line 1 col 100001"


def test_byte_identical_bodies_match_without_being_parsed() -> None:
    calls: list[Any] = []

    def normalise(body: Any) -> Any:
        calls.append(body)
        return body

    same = Captured(200, JSON, b'{"x": 1}')
    assert compare(same, Captured(200, JSON, b'{"x": 1}'), normalise=normalise) == []
    assert calls == []


def test_the_first_difference_of_two_megabyte_texts_is_found_exactly() -> None:
    a = "x" * 1_048_576
    b = a[:777_777] + "y" + a[777_778:]
    assert first_difference(a, b) == 777_777
    assert first_difference(a, a + "z") == len(a)
    assert first_difference(b"", b"abc") == 0


def test_equal_subtrees_are_skipped_only_where_python_equality_is_json_equality() -> None:
    rows = [{"id": i, "price": i * 1.5, "tags": ["a"]} for i in range(100)]
    other = [dict(row) for row in rows]
    other[70] = {**other[70], "price": 0}
    (difference,) = compare(json_response(rows), json_response(other))
    assert difference.where == "body $[70].price"
    # With booleans, 1 == True in Python: no shortcut, and the difference is found.
    flags = [{"id": i, "on": True} for i in range(100)]
    ones = [{"id": i, "on": 1 if i == 40 else True} for i in range(100)]
    assert compare(json_response(flags), json_response(ones)) == [
        Difference("body $[40].on", "true", "1")
    ]
