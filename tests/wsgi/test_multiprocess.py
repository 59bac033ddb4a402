"""Reading a server's worker count from its command line."""

from __future__ import annotations

import pytest

from bridge.wsgi.multiprocess import workers_in


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
