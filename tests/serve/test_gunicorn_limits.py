"""gunicorn's request limits at the message level: exact ASGI messages for each refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.serve.gunicorn_limits import GunicornLimits
from bridge.serve.worker import AccessLog


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"hello"})


def http_scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "query_string": b"", "http_version": "1.1", "headers": headers or [],
        "client": ("127.0.0.1", 1234),
    }  # fmt: skip


def call(app: Any, scope: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


LIMITS = GunicornLimits(ok_app, line=40, fields=3, field_size=20)


@pytest.mark.parametrize(
    ("scope", "status", "sentence"),
    [
        (http_scope("/" + "a" * 30), 414, "The request line is 44 bytes; the limit is 40.\n"),
        (
            http_scope(headers=[(b"a", b"1")] * 4),
            431,
            "The request has 4 header fields; the limit is 3.\n",
        ),
        (
            http_scope(headers=[(b"x-big", b"v" * 20)]),
            431,
            "The header field x-big is 27 bytes; the limit is 20.\n",
        ),
    ],
)
def test_refusals(scope: Any, status: int, sentence: str) -> None:
    body = sentence.encode()
    assert call(LIMITS, scope) == [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


def test_within_the_limits_the_app_answers() -> None:
    sent = call(LIMITS, http_scope("/ok", [(b"a", b"1")] * 3))
    assert [m.get("status") for m in sent] == [200, None]
    unlimited = GunicornLimits(ok_app, line=0, fields=0, field_size=0)
    assert (
        call(unlimited, http_scope("/" + "a" * 9000, [(b"a", b"v" * 9000)] * 200))[0]["status"]
        == 200
    )


def test_a_websocket_past_the_limits_is_closed_before_accept() -> None:
    scope = {**http_scope("/" + "a" * 60), "type": "websocket"}
    assert call(LIMITS, scope) == [{"type": "websocket.close", "code": 1008}]


def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    call(GunicornLimits(app, line=1, fields=1, field_size=1), {"type": "lifespan"})
    assert seen == ["lifespan"]


class RecordingLog:
    """Stands in for gunicorn's logger: records what its access() was given."""

    access_log_enabled = True

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        self.calls.append((resp.status, resp.headers, resp.sent, req, environ["RAW_URI"]))


def test_access_log_records_status_headers_and_bytes() -> None:
    log = RecordingLog()
    call(AccessLog(ok_app, log), http_scope("/x", [(b"user-agent", b"t")]))
    assert log.calls == [("200", [("x-a", "1")], 5, [("user-agent", "t")], "/x")]
    log.access_log_enabled = False
    call(AccessLog(ok_app, log), http_scope("/y"))
    assert len(log.calls) == 1
