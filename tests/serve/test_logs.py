"""One failure, one log entry: bridge's line for a cut response, logged from the
request's thread, silences uvicorn's echo of it in the request's task, and no other."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from bridge.serve.logs import INCOMPLETE, marked, one_traceback


async def request(cut: bool) -> None:
    """One request as uvicorn runs it with reset_contextvars: a task started from an empty
    context runs the served app (its thread logs through a copy of the task's context),
    then uvicorn logs its own line in the task."""

    def in_thread() -> None:
        if cut:
            logging.getLogger("bridge").error(
                "Exception in WSGI application after the response started, GET /; "
                "the response was cut."
            )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.to_thread(in_thread)  # a copy of the task's context, as the pool's

    async def run_asgi() -> None:
        await marked(app)({"type": "http"}, None, None)
        logging.getLogger("uvicorn.error").error(INCOMPLETE)

    await asyncio.get_running_loop().create_task(run_asgi(), context=contextvars.Context())


def test_uvicorns_echo_of_a_cut_response_is_dropped_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one_traceback()

    async def main() -> None:
        await request(cut=True)
        await request(cut=False)  # an app that really returned mid-response: its line stays

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("bridge", "Exception in WSGI application after the response started, GET /; "
                   "the response was cut."),
        ("uvicorn.error", INCOMPLETE),
    ]  # fmt: skip


def test_the_wrapper_is_made_once_per_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert marked(app) is marked(app)
