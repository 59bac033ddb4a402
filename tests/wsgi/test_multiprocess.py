"""Reading a server's worker count from its command line."""

from __future__ import annotations

import pytest

from bridge.wsgi.multiprocess import VARIABLE, multiprocess, workers_in


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (["uvicorn", "--workers", "4", "app:app"], 4),
        (["gunicorn", "-w", "3"], 3),
        (["gunicorn", "-w2"], 2),
        (["granian", "--workers=5"], 5),
        (["hypercorn", "app:app"], None),
        (["uvicorn", "--workers", "many"], None),
    ],
)
def test_workers_in(argv: list[str], count: int | None) -> None:
    assert workers_in(argv) == count


@pytest.mark.parametrize(("told", "expected"), [("1", True), ("0", False)])
def test_the_variable_set_by_bridge_serve_is_read_as_it_changes(
    monkeypatch: pytest.MonkeyPatch, told: str, expected: bool
) -> None:
    monkeypatch.setenv(VARIABLE, told)
    assert multiprocess() is expected
    monkeypatch.setenv(VARIABLE, "0" if expected else "1")
    assert multiprocess() is not expected


def test_without_the_variable_the_parent_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's parent is a shell or a runner, not a server with workers.
    monkeypatch.delenv(VARIABLE, raising=False)
    assert multiprocess() is False
    monkeypatch.setenv(VARIABLE, "maybe")  # not 0 or 1: the parent decides too
    assert multiprocess() is False
    monkeypatch.setenv(VARIABLE, "1")
    assert multiprocess() is True
