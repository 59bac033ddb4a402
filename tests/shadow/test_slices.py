"""``bridge.shadow.slices``: JSON parsed by the C decoder in pieces no larger than a window,
with the result (and the refusals) of ``json.loads``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.shadow import slices

DOCUMENTS: list[Any] = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, -3e9, None, True, False], "c": {"d": "é\u2603\U0001f600"}},
    [{"id": i, "name": f"row {i}", "tags": ["a", "b"], "ok": i % 2 == 0} for i in range(300)],
    {"rows": [[[i, {"x": [i] * 5}]] for i in range(100)], "empty": {}, "none": []},
    {"dup": 1, "text": 'a "quoted" \\ string with , and ] and } inside' * 20},
    ["x" * 10_000, {"long": "y" * 10_000}],
    [[[[[[[[[[1]]]]]]]]], {"a": {"b": {"c": {"d": {}}}}}],
]


class Recording(json.JSONDecoder):
    """The real decoder, noting how much text each call could scan and what it parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        value, end = super().raw_decode(s, idx)
        self.calls.append((len(s) - idx, isinstance(value, (dict, list))))
        return value, end


@pytest.mark.parametrize("window", [2, 16, 256, 4096])
@pytest.mark.parametrize("indent", [None, 1])
def test_the_result_is_what_json_loads_gives(window: int, indent: int | None) -> None:
    for document in DOCUMENTS:
        text = json.dumps(document, indent=indent, ensure_ascii=False)
        assert slices.loads(text, window) == json.loads(text)
        assert slices.loads(f" \n\t{text} \r\n", window) == json.loads(text)


def test_duplicate_keys_keep_the_last_as_json_loads_does() -> None:
    text = '{"a": 1, "b": [' + ", ".join(["0"] * 50) + '], "a": 2}'
    assert slices.loads(text, 16) == json.loads(text) == {"a": 2, "b": [0] * 50}


def test_no_container_is_parsed_in_one_call_past_the_window() -> None:
    rows = [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(20_000)]
    text = json.dumps({"rows": rows, "total": len(rows)})
    assert len(text) > 1024 * 1024
    decoder = Recording()
    assert slices.loads(text, slices.WINDOW, decoder) == json.loads(text)
    containers = [scanned for scanned, container in decoder.calls if container]
    assert containers and max(containers) <= slices.WINDOW
    assert len(decoder.calls) >= len(rows), "each row its own call, at most"


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', '{"a" 1}', '{"a": 1,}', "[1, 2", "[1 2]", "[1,]", "{1: 2}", "[1] [2]", "", "nul"],
)
@pytest.mark.parametrize("window", [2, 4096])
def test_what_json_loads_refuses_is_refused(text: str, window: int) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    padded = text if window > 2 else text + " " * 10  # past the window: element by element
    with pytest.raises(ValueError):
        slices.loads(padded, window)
