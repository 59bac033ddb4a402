"""The response side on its own: a ``Sender`` fed from a real thread, drained on a real loop,
sending to a list. Message level, in process."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any
from wsgiref.validate import validator

import pytest

from bridge import Bridge, ClientDisconnected
from bridge.wsgi.cycle import RequestCycle
from bridge.wsgi.framing import Framing, State
from bridge.wsgi.sender import Sender
from tests.asgi import Client, http_scope


class Recorder:
    """What the sender did to the outside: messages sent, streams started, clients lost."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.streams = 0
        self.gone = 0
        self.fail_with = fail_with
        self.gate: asyncio.Event | None = None  # set: a client that reads when told

    async def send(self, message: dict[str, Any]) -> None:
        if self.gate is not None and message["type"] == "http.response.body":
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)

    def sender(self, buffer_size: int = 1024) -> Sender:
        return Sender(
            Framing(buffer_size=buffer_size),
            self.send,
            asyncio.get_running_loop(),
            self,
        )

    def on_stream(self) -> None:
        self.streams += 1

    def on_gone(self) -> None:
        self.gone += 1

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if "body" in m)


def test_a_list_body_from_a_thread_goes_out_whole_in_one_start_and_one_body() -> None:
    async def main() -> Recorder:
        out = Recorder()
        sender = out.sender()

        def app() -> None:
            sender.start_response("200 OK", [("Content-Type", "text/plain")])
            for chunk in [b"a", b"b", b"c"]:
                sender.push(chunk, whole=True)
            sender.end(None)

        await asyncio.to_thread(app)
        await sender.finish()
        sender.close()
        return out

    out = asyncio.run(main())
    assert [m["type"] for m in out.messages] == ["http.response.start", "http.response.body"]
    assert (b"content-length", b"3") in out.messages[0]["headers"]
    assert out.body == b"abc" and out.streams == 0 and out.gone == 0


def test_a_thread_past_the_buffer_waits_for_the_client_and_a_disconnect_frees_it() -> None:
    async def main() -> tuple[list[BaseException], int, Sender]:
        out = Recorder()
        out.gate = asyncio.Event()  # the client reads nothing yet
        sender = out.sender(buffer_size=100)
        pushed: list[int] = []
        errors: list[BaseException] = []

        def app() -> None:
            sender.start_response("200 OK", [])
            try:
                for _ in range(50):
                    sender.push(b"x" * 60)
                    pushed.append(1)
            except ClientDisconnected as exc:
                errors.append(exc)

        thread = asyncio.ensure_future(asyncio.to_thread(app))
        while not out.messages:  # the headers are out, the body waits for the client
            await asyncio.sleep(0.005)
        for _ in range(20):  # the thread is blocked: nothing more gets in
            await asyncio.sleep(0.005)
        held = len(pushed)
        sender.client_gone()
        await asyncio.wait_for(thread, 10)
        sender.close()
        return errors, held, sender

    errors, held, sender = asyncio.run(main())
    assert held == 1  # the second chunk passed the buffer: its push waits for the client
    assert len(errors) == 1
    assert sender.framing.state is State.GONE


def test_a_send_that_raises_oserror_counts_as_a_client_gone_and_no_bytes_sent() -> None:
    async def main() -> tuple[Recorder, Sender]:
        out = Recorder(fail_with=ConnectionResetError("peer reset"))
        sender = out.sender()
        sender.start_response("200 OK", [])
        sender.push(b"hello", whole=True)
        sender.end(None)
        await sender.finish()
        sender.close()
        return out, sender

    out, sender = asyncio.run(main())
    assert out.gone == 2  # the start and the body each met a closed connection
    assert sender.sent == 0 and sender.status == 200


def test_a_failed_body_replaces_a_held_response_but_not_one_that_streams() -> None:
    async def main() -> tuple[bool, bool, Recorder]:
        out = Recorder()
        held = out.sender()
        held.start_response("200 OK", [])
        held.push(b"part", whole=True)
        replaced = held.body_failed(413)
        held.kick()
        await held.finish()
        held.close()

        streaming = Recorder().sender(buffer_size=4)
        streaming.start_response("200 OK", [])
        await asyncio.to_thread(streaming.push, b"more than four")
        kept = streaming.body_failed(413)
        streaming.client_gone()
        streaming.close()
        return replaced, kept, out

    replaced, kept, out = asyncio.run(main())
    assert replaced and not kept
    assert out.messages[0]["status"] == 413 and out.streams == 1


@pytest.mark.parametrize("bad", ["text", 3])
def test_a_body_chunk_that_is_not_bytes_is_refused_with_its_type(bad: Any) -> None:
    async def main() -> None:
        sender = Recorder().sender()
        sender.start_response("200 OK", [])
        with pytest.raises(TypeError, match=type(bad).__name__):
            sender.push(bad)

    asyncio.run(main())


def test_write_before_start_response_is_an_error_that_says_so() -> None:
    async def main() -> None:
        sender = Recorder().sender()
        with pytest.raises(Exception, match="before start_response"):
            sender.write(b"x")

    asyncio.run(main())


def test_state_is_only_changed_under_the_lock_from_any_thread() -> None:
    # Four threads push into one sender at once while the loop drains: every byte
    # arrives once, in a body that ends cleanly.
    async def main() -> Recorder:
        out = Recorder()
        sender = out.sender(buffer_size=64)
        sender.start_response("200 OK", [])
        barrier = threading.Barrier(4)

        def pusher() -> None:
            barrier.wait()
            for _ in range(200):
                sender.push(b"y" * 7)

        await asyncio.gather(*(asyncio.to_thread(pusher) for _ in range(4)))
        sender.end(None)
        await asyncio.wait_for(sender.finish(), 10)
        sender.close()
        return out

    out = asyncio.run(main())
    assert out.body == b"y" * 7 * 800
    assert out.messages[-1].get("more_body", False) is False


@pytest.mark.parametrize("streamed", [False, True])
def test_a_finished_request_is_freed_without_the_garbage_collector(streamed: bool) -> None:
    # The cycle and its sender refer to each other while the request runs; once it
    # ends, none of it may be left for the collector (a busy server would then hold
    # recent requests' buffers and locks until the next collection). DEBUG_SAVEALL
    # keeps what a collection finds unreachable, so it can be looked at.
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if not streamed:
            return [b"whole"]
        return iter([b"x" * 4096] * 4)  # past the buffer: the sender task streams it

    bridge = Bridge(validator(app), response_buffer_size=1024, metrics=False)

    async def main() -> list[int]:
        statuses = []
        for _ in range(20):
            client = Client()
            await client.run(bridge, http_scope())
            statuses.append(client.status)
        return statuses

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert asyncio.run(main()) == [200] * 20
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (RequestCycle, Sender))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
