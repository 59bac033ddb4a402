"""One failure, one log entry: bridge's line for a cut response, logged from the
request's thread, silences uvicorn's echo of it in the request's task, and no other."""

from __future__ import annotations

import contextvars
import logging
import threading

import pytest

from bridge.serve.logs import INCOMPLETE, begin_request, one_traceback


def request(cut: bool) -> None:
    """One request as uvicorn runs it: a context of its own, bridge's thread, then uvicorn."""

    def in_thread() -> None:
        if cut:
            logging.getLogger("bridge").error(
                "Exception in WSGI application after the response started, GET /; "
                "the response was cut."
            )

    def task() -> None:
        context = contextvars.copy_context()  # what the thread pool hands the thread
        thread = threading.Thread(target=context.run, args=(in_thread,))
        thread.start()
        thread.join()
        logging.getLogger("uvicorn.error").error(INCOMPLETE)

    def connection() -> None:  # uvicorn's protocol, as data arrives
        begin_request()
        contextvars.copy_context().run(task)  # the request task starts from this context

    contextvars.copy_context().run(connection)


def test_uvicorns_echo_of_a_cut_response_is_dropped_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one_traceback()
    with caplog.at_level(logging.INFO):
        request(cut=True)
        request(cut=False)  # an app that really returned mid-response: uvicorn's line stays
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("bridge", "Exception in WSGI application after the response started, GET /; "
                   "the response was cut."),
        ("uvicorn.error", INCOMPLETE),
    ]  # fmt: skip
