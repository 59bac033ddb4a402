"""The response state machine, transition by transition: events in, ASGI messages out.

No threads, no loop, no clock: each test feeds events and compares the exact
messages the machine queues.
"""

from __future__ import annotations

import pytest

from bridge.errors import ClientDisconnected, ResponseError
from bridge.wsgi.framing import CLOSE, Framing, State, closing_headers, plain_response

CT = [(b"content-type", b"text/plain")]


def start(status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes, more: bool = False) -> dict[str, object]:
    if more:
        return {"type": "http.response.body", "body": data, "more_body": True}
    return {"type": "http.response.body", "body": data}


def end_message() -> dict[str, object]:
    return {"type": "http.response.body", "body": b"", "more_body": False}


def machine(**kw: object) -> Framing:
    framing = Framing(buffer_size=100, **kw)  # type: ignore[arg-type]
    assert framing.state is State.IDLE and framing.take() == []
    return framing


# -- IDLE ---------------------------------------------------------------------------


def test_idle_start_holds_and_sends_nothing() -> None:
    framing = machine()
    framing.start(200, CT, None)
    assert framing.state is State.HOLDING and framing.take() == [] and not framing.headers_sent


def test_idle_end_is_a_500_for_a_missing_start_response() -> None:
    framing = machine()
    problem = framing.end()
    assert problem is not None and "without calling start_response" in str(problem)
    assert framing.state is State.FAILED and framing.take() == plain_response(500)
    assert framing.finished


def test_idle_body_is_a_contract_error() -> None:
    with pytest.raises(ResponseError, match="before start_response"):
        machine().body(b"x")


def test_idle_error_is_a_500() -> None:
    framing = machine()
    framing.error()
    assert framing.state is State.FAILED and framing.take() == plain_response(500)


# -- HOLDING ------------------------------------------------------------------------


def test_holding_a_whole_body_ends_with_the_body_and_a_content_length() -> None:
    framing = machine()
    framing.start(200, CT, None)
    assert not framing.body(b"ab", whole=True) and not framing.body(b"cd", whole=True)
    assert framing.take() == []  # held: nothing yet
    assert framing.end() is None
    assert framing.take() == [start(200, [*CT, (b"content-length", b"4")]), body(b"abcd")]
    assert framing.state is State.DONE and framing.finished


def test_holding_a_streamed_body_goes_out_with_its_first_chunk() -> None:
    framing = machine()
    framing.start(200, CT, None)
    assert not framing.body(b"ab")
    assert framing.state is State.STREAMING and framing.headers_sent
    assert framing.take() == [start(200, CT), body(b"ab", more=True)]  # no length added
    assert framing.headers == []  # out, and not kept for the rest of a long stream
    framing.body(b"cd")
    framing.body(b"ef")
    assert framing.take() == [body(b"cd", more=True), body(b"ef", more=True)]
    assert framing.backlog == 6
    framing.sent(6)
    assert framing.backlog == 0
    assert framing.end() is None
    assert framing.take() == [end_message()]
    assert framing.state is State.DONE and framing.finished


def test_holding_an_empty_chunk_decides_nothing() -> None:
    framing = machine()
    framing.start(200, CT, None)
    assert not framing.body(b"")
    assert framing.state is State.HOLDING and framing.take() == []
    framing.error()  # so an error after an empty first chunk is still a clean 500
    assert framing.take() == plain_response(500)


def test_holding_an_http10_body_past_the_buffer_size_streams() -> None:
    framing = machine(http10=True)
    framing.start(200, CT, None)
    framing.body(b"a" * 60)
    assert framing.state is State.HOLDING and framing.take() == []
    framing.body(b"b" * 60)
    assert framing.state is State.STREAMING
    assert framing.take() == [start(200, CT), body(b"a" * 60 + b"b" * 60, more=True)]
    assert framing.backlog == 120


def test_holding_a_whole_list_body_is_held_to_the_end_whatever_its_size() -> None:
    framing = machine()
    framing.start(200, [], None)
    for _ in range(3):
        framing.body(b"x" * 80, whole=True)
    assert framing.state is State.HOLDING and framing.take() == []
    framing.end()
    assert framing.take() == [
        start(200, [(b"content-length", b"240")]),
        body(b"x" * 80, more=True),
        body(b"x" * 80, more=True),
        body(b"x" * 80, more=True),
        body(b""),
    ]


def test_holding_a_chunk_reaching_the_content_length_is_whole_and_cuts_the_excess() -> None:
    framing = machine()
    framing.start(200, [(b"content-length", b"5")], 5)
    assert framing.body(b"hello world")  # True: no more is wanted
    assert framing.overflowed and framing.written == 5
    assert framing.state is State.HOLDING and framing.take() == []
    framing.end()
    assert framing.take() == [start(200, [(b"content-length", b"5")]), body(b"hello")]


def test_holding_a_chunk_short_of_the_content_length_streams_with_it() -> None:
    framing = machine()
    framing.start(200, [(b"content-length", b"5")], 5)
    assert not framing.body(b"hel")
    assert framing.take() == [start(200, [(b"content-length", b"5")]), body(b"hel", more=True)]
    assert framing.body(b"lo world")  # True: no more is wanted
    assert framing.overflowed and framing.written == 5
    framing.end()
    assert framing.take() == [body(b"lo", more=True), end_message()]


def test_holding_a_short_whole_body_is_a_500() -> None:
    framing = machine()
    framing.start(200, [(b"content-length", b"10")], 10)
    framing.body(b"short", whole=True)
    problem = framing.end()
    assert problem is not None and "Content-Length of 10 bytes but produced 5" in str(problem)
    assert framing.state is State.FAILED and framing.take() == plain_response(500)


def test_holding_an_error_drops_the_held_body_for_a_500() -> None:
    framing = machine()
    framing.start(200, CT, None)
    framing.body(b"first chunk", whole=True)
    framing.error()
    assert framing.take() == plain_response(500) and framing.state is State.FAILED


def test_holding_a_second_start_needs_exc_info_and_replaces_the_headers() -> None:
    framing = machine()
    framing.start(200, [(b"x-stale", b"1")], None)
    framing.body(b"stale body", whole=True)
    with pytest.raises(ResponseError, match="second time without exc_info"):
        framing.start(500, [], None)
    framing.start(503, CT, None, replace=True)
    assert framing.written == 0 and framing.take() == []
    framing.body(b"sorry", whole=True)
    framing.end()
    assert framing.take() == [start(503, [*CT, (b"content-length", b"5")]), body(b"sorry")]


@pytest.mark.parametrize(("status", "head"), [(204, False), (304, False), (200, True)])
def test_holding_no_body_responses_send_none_and_add_no_length(status: int, head: bool) -> None:
    framing = machine(head=head)
    framing.start(status, [], None)
    framing.body(b"ignored")
    assert framing.state is State.HOLDING and framing.take() == []  # nothing to stream
    framing.end()
    assert framing.take() == [start(status, []), body(b"")]


def test_holding_a_head_keeps_the_apps_declared_length() -> None:
    framing = machine(head=True)
    framing.start(200, [(b"content-length", b"5")], 5)
    framing.body(b"hello")
    framing.end()
    assert framing.take() == [start(200, [(b"content-length", b"5")]), body(b"")]


def test_holding_an_http10_response_without_a_length_is_held_to_the_end() -> None:
    framing = machine(http10=True)
    framing.start(200, [], None)
    framing.body(b"a" * 25)
    framing.body(b"a" * 25)
    assert framing.state is State.HOLDING and framing.take() == []
    framing.end()
    assert framing.take() == [start(200, [(b"content-length", b"50")]), body(b"a" * 50)]


def test_holding_an_http10_response_with_a_length_may_stream() -> None:
    framing = machine(http10=True)
    framing.start(200, [(b"content-length", b"9")], 9)
    framing.body(b"abc")
    assert framing.take() == [start(200, [(b"content-length", b"9")]), body(b"abc", more=True)]


def test_holding_send_path_adds_the_length_and_sends_by_path() -> None:
    framing = machine()
    framing.start(200, CT, None)
    assert framing.send_path("/srv/file", 9)
    framing.end()
    assert framing.take() == [
        start(200, [*CT, (b"content-length", b"9")]),
        {"type": "http.response.pathsend", "path": "/srv/file"},
    ]


def test_send_path_is_refused_after_body_bytes() -> None:
    framing = machine()
    framing.start(200, CT, None)
    framing.body(b"x")
    assert not framing.send_path("/srv/file", 9)


def test_holding_refuse_answers_the_request_bodys_status_instead() -> None:
    framing = machine()
    framing.start(200, CT, None)
    framing.body(b"the app caught BodyTooLarge", whole=True)
    assert framing.body_failed(413)
    assert framing.state is State.REFUSED and framing.status == 413
    assert framing.take() == plain_response(413, [(b"connection", b"close")])
    # Whatever the application does next is not sent.
    assert framing.body(b"more") is True
    framing.end()
    framing.error()
    assert framing.take() == [] and framing.finished


def test_idle_refuse_answers_408() -> None:
    framing = machine()
    assert framing.body_failed(408)
    assert framing.take() == plain_response(408, [(b"connection", b"close")])


def test_holding_client_gone_drops_everything_and_the_next_chunk_raises() -> None:
    framing = machine()
    framing.start(200, CT, None)
    framing.body(b"held", whole=True)
    framing.client_gone()
    assert framing.state is State.GONE and framing.take() == [] and framing.finished
    with pytest.raises(ClientDisconnected):
        framing.body(b"next")


# -- STREAMING ----------------------------------------------------------------------


def streaming(content_length: int | None = None) -> Framing:
    framing = machine()
    headers = [] if content_length is None else [(b"content-length", b"%d" % content_length)]
    framing.start(200, headers, content_length)
    framing.body(b"first")
    assert framing.take() == [start(200, headers), body(b"first", more=True)]
    return framing


def test_streaming_error_cuts_after_what_is_queued() -> None:
    framing = streaming()
    framing.body(b"queued")
    framing.error()
    assert framing.state is State.CUT
    assert framing.take() == [body(b"queued", more=True)]  # and no final message
    assert framing.finished


def test_streaming_a_short_body_is_cut() -> None:
    framing = streaming(content_length=10)
    problem = framing.end()
    assert problem is not None and framing.state is State.CUT and framing.take() == []


def test_streaming_reaching_the_length_then_end_finishes() -> None:
    framing = streaming(content_length=8)
    assert framing.body(b"abc")
    framing.end()
    assert framing.take() == [body(b"abc", more=True), end_message()]


def test_streaming_refuse_is_too_late() -> None:
    framing = streaming()
    assert not framing.body_failed(413) and framing.state is State.STREAMING


def test_streaming_client_gone_drops_the_queue() -> None:
    framing = streaming()
    framing.body(b"unsent")
    framing.client_gone()
    assert framing.take() == [] and framing.state is State.GONE


def test_streaming_start_is_ignored_once_decided_and_headers_sent_is_reported() -> None:
    framing = streaming()
    assert framing.headers_sent
    framing.client_gone()
    framing.start(500, [], None, replace=True)
    assert framing.state is State.GONE


# -- the rule as a whole ------------------------------------------------------------


@pytest.mark.parametrize("whole", [True, False])
def test_the_same_events_give_the_same_messages_every_time(whole: bool) -> None:
    def run() -> list[object]:
        framing = Framing()
        framing.start(200, CT, None)
        out = []
        for chunk in (b"one", b"two"):
            framing.body(chunk, whole)
            out.extend(framing.take())  # taken between chunks or not: the same messages
        framing.end()
        return out + framing.take()

    first = run()
    assert all(run() == first for _ in range(300))
    if whole:
        assert first == [start(200, [*CT, (b"content-length", b"6")]), body(b"onetwo")]
    else:
        assert first == [
            start(200, CT),
            body(b"one", more=True),
            body(b"two", more=True),
            end_message(),
        ]


def test_bridge_own_answers_close_the_connection_except_a_500() -> None:
    # A refusal may leave body bytes unread on the connection; a 500 follows a request
    # read whole, so the connection stays usable.
    assert closing_headers(500) == []
    assert closing_headers(408) == closing_headers(413) == closing_headers(431) == [CLOSE]
    assert closing_headers(503, retry_after=7) == [CLOSE, (b"retry-after", b"7")]
