"""``bridge.canary`` in process: the split, the fallback, the rollback rule, the controls."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

import bridge
from bridge import Bridge, Broadcast, Canary, Request
from tests.asgi import Client, http_scope

Environ = dict[str, Any]


def legacy_app(environ: Environ, start_response: Any) -> list[bytes]:
    """Answers "legacy", echoing the method and the body it read, as JSON."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    data = {"arm": "legacy", "method": environ["REQUEST_METHOD"], "body": body.decode()}
    payload = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])  # fmt: skip
    return [payload]


LEGACY = validator(legacy_app)


def build(canary: float | Canary, methods: list[str] | None = None, **options: Any) -> Bridge:
    app = Bridge(LEGACY, adaptive_threads=False, **options)
    calls: list[str] = []
    app.state["calls"] = calls

    @app.route("/items/<int:item_id>", methods=methods or ["GET"], canary=canary)
    async def item(request: Request, item_id: int) -> Response:
        calls.append(request.method)
        return Response(json.dumps({"arm": "view", "item": item_id}), mimetype="application/json")

    return app


def failing(
    canary: Canary, methods: list[str] | None = None, status: int | None = None, **kw: Any
) -> Bridge:
    """A canary whose view raises (or answers ``status``) on every request."""
    app = Bridge(LEGACY, adaptive_threads=False, **kw)
    calls: list[bytes] = []
    app.state["calls"] = calls

    @app.route("/items", methods=methods or ["GET"], canary=canary)
    async def items(request: Request) -> Response:
        calls.append(request.get_data())
        if status is not None:
            return Response("broken", status=status)
        raise RuntimeError("the new view is broken")

    return app


def get(
    app: Bridge,
    path: str,
    *,
    method: str = "GET",
    cookie: str | None = None,
    body: list[bytes] | None = None,
) -> Client:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    if body:
        headers.append((b"content-length", str(sum(map(len, body))).encode()))
    client = Client(body or [b""])
    asyncio.run(client.run(app, http_scope(path, method=method, headers=headers)))
    return client


def arm_of(client: Client) -> str:
    assert client.status == 200, client.sent
    arm: str = json.loads(client.body)["arm"]
    return arm


# -- configuration ---------------------------------------------------------------------------


def test_canary_is_exported_and_a_share_means_canary_of_that_share() -> None:
    assert bridge.Canary is Canary
    assert Canary.of(0.05) == Canary(share=0.05)
    assert Canary.of(None) is None
    assert Canary(share=1).share == 1


@pytest.mark.parametrize(
    ("kwargs", "sentence"),
    [
        ({"share": 1.5}, "A canary share must be a fraction from 0 to 1, not 1.5"),
        ({"share": True}, "not True"),
        ({"share": 0.1, "key": "session"}, 'The key "session" must be "cookie:NAME"'),
        ({"share": 0.1, "max_error_rate": 2}, "max_error_rate must be a fraction from 0 to 1"),
        ({"share": 0.1, "min_requests": 0}, "min_requests must be an int of at least 1, not 0"),
    ],
)
def test_a_bad_setting_is_refused_with_a_sentence(kwargs: dict[str, Any], sentence: str) -> None:
    with pytest.raises(ValueError, match=re.escape(sentence)):
        Canary(**kwargs)


def test_canary_refuses_what_is_not_a_share() -> None:
    with pytest.raises(TypeError, match=r"canary= takes a share such as 0.05.*not 'half'"):
        Bridge(LEGACY).add_route("/x", lambda r: "x", canary="half")  # type: ignore[arg-type]


def test_shadow_and_canary_on_one_route_is_refused() -> None:
    app = Bridge(LEGACY)
    with pytest.raises(ValueError, match='"/x" has both shadow= and canary='):
        app.add_route("/x", lambda request: "x", methods=["GET"], shadow=True, canary=0.1)


def test_one_canary_per_rule() -> None:
    app = build(0.5)
    with pytest.raises(ValueError, match='"/items/<int:item_id>" already has a canary'):
        app.add_route("/items/<int:item_id>", lambda r, item_id: "x", methods=["PUT"], canary=0.1)


def test_canary_of_an_unknown_rule_names_the_known_ones() -> None:
    app = build(0.5)
    with pytest.raises(LookupError, match=r'"/nope" is not .* \(canary routes: "/items/<int:'):
        app.canary("/nope")


# -- the split ----------------------------------------------------------------------------------


def test_each_cookie_lands_on_one_arm_and_the_share_holds() -> None:
    app = build(Canary(share=0.5, key="cookie:sid"))
    first = {n: arm_of(get(app, "/items/1", cookie=f"sid=user{n}")) for n in range(200)}
    again = {n: arm_of(get(app, "/items/1", cookie=f"theme=dark; sid=user{n}")) for n in range(200)}
    assert first == again
    views = sum(arm == "view" for arm in first.values())
    assert 60 <= views <= 140  # 30 % to 70 % of 200
    snapshot = app.canaries.snapshot()[0]
    assert snapshot["arms"]["view"]["requests"] == 2 * views
    assert snapshot["arms"]["legacy"]["requests"] == 400 - 2 * views


def test_without_the_key_each_request_draws_its_own_arm() -> None:
    app = build(Canary(share=0.5, key="cookie:sid"))
    draws = iter([0.1, 0.9, 0.2, 0.8])
    app.canaries.sample = lambda: next(draws)
    assert [arm_of(get(app, "/items/1")) for _ in range(4)] == ["view", "legacy"] * 2


def test_share_zero_and_one() -> None:
    app = build(0.0)
    assert {arm_of(get(app, "/items/1")) for _ in range(20)} == {"legacy"}
    app.canary("/items/<int:item_id>").set(1.0)
    assert {arm_of(get(app, "/items/1")) for _ in range(20)} == {"view"}


def test_other_methods_and_paths_stay_legacy() -> None:
    app = build(1.0)
    client = get(app, "/items/1", method="POST")
    assert arm_of(client) == "legacy"
    assert app.canaries.snapshot()[0]["arms"]["legacy"]["requests"] == 0  # not the canary's


# -- the fallback -------------------------------------------------------------------------------


def test_a_raising_view_is_answered_by_the_legacy_app(caplog: pytest.LogCaptureFixture) -> None:
    app = failing(Canary(share=1.0))
    with caplog.at_level(logging.WARNING, logger="bridge"):
        client = get(app, "/items")
    assert arm_of(client) == "legacy"
    assert app.state["calls"] == [b""]
    arms = app.canaries.snapshot()[0]["arms"]
    assert arms["view"] | {"p50": 0, "p99": 0} == {
        "requests": 1, "errors": 1, "fallbacks": 1, "p50": 0, "p99": 0,
    }  # fmt: skip
    # Logged once: one record, which carries the view's traceback.
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "The canary view of /items failed (500) for GET /items" in record.message
    assert "the legacy app answered instead" in record.message
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_a_5xx_answer_falls_back_too() -> None:
    app = failing(Canary(share=1.0), status=503)
    assert arm_of(get(app, "/items")) == "legacy"
    assert app.canaries.snapshot()[0]["arms"]["view"]["fallbacks"] == 1


def test_a_4xx_answer_is_the_views_own() -> None:
    app = failing(Canary(share=1.0), status=404)
    client = get(app, "/items")
    assert (client.status, client.body) == (404, b"broken")
    assert app.canaries.snapshot()[0]["arms"]["view"]["errors"] == 0


def test_fallback_false_shows_the_views_error() -> None:
    app = failing(Canary(share=1.0, fallback=False))
    assert get(app, "/items").status == 500


def test_a_post_does_not_fall_back_unless_unsafe() -> None:
    app = failing(Canary(share=1.0), methods=["POST"])
    assert get(app, "/items", method="POST", body=[b"a=1"]).status == 500
    unsafe = failing(Canary(share=1.0, unsafe=True), methods=["POST"])
    client = get(unsafe, "/items", method="POST", body=[b"a=", b"1&b=", b"2"])
    assert json.loads(client.body) == {"arm": "legacy", "method": "POST", "body": "a=1&b=2"}
    assert unsafe.state["calls"] == [b"a=1&b=2"]  # the view read it first, the same bytes


def test_a_body_past_the_buffer_is_not_kept_and_the_views_error_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The body copy's budget is request_buffer_size: past it nothing is kept for a
    # fallback, so the client gets the view's 500 rather than a legacy app with no body.
    app = failing(Canary(share=1.0, unsafe=True), methods=["POST"], request_buffer_size=1024)
    chunks = [b"x" * 1000] * 50
    with caplog.at_level(logging.WARNING, logger="bridge"):
        client = get(app, "/items", method="POST", body=chunks)
    assert client.status == 500
    # No fallback: the view's exception is logged as for any route.
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.message.startswith("Exception in view") and record.exc_info is not None
    arms = app.canaries.snapshot()[0]["arms"]
    assert (arms["view"]["errors"], arms["view"]["fallbacks"]) == (1, 0)


def test_a_failure_after_the_first_body_byte_is_not_taken_back() -> None:
    # A first chunk past response_buffer_size goes out at once: then it cannot be taken back.
    app = Bridge(LEGACY, adaptive_threads=False, response_buffer_size=1024)

    @app.route("/stream", methods=["GET"], canary=1.0)
    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first" * 1000
            await asyncio.sleep(0.01)
            raise RuntimeError("midway")

        return Response(chunks(), mimetype="text/plain")

    client = Client()
    asyncio.run(client.run(app, http_scope("/stream")))
    assert client.status == 200
    assert client.body == b"first" * 1000
    assert not client.finished  # cut, so the client sees the truncation
    assert app.canaries.snapshot()[0]["arms"]["view"]["fallbacks"] == 0


# -- the rollback -------------------------------------------------------------------------------


def test_a_raising_view_is_rolled_back_within_20_requests_then_never_called() -> None:
    app = failing(Canary(share=1.0, max_error_rate=0.2, min_requests=10))
    control = app.canary("/items")
    answered = [arm_of(get(app, "/items")) for _ in range(30)]
    assert answered == ["legacy"] * 30  # every GET, through the fallback or the legacy arm
    calls = len(app.state["calls"])
    assert 10 <= calls <= 20
    assert (control.state, control.share) == ("rolled back", 0.0)
    for _ in range(10):
        get(app, "/items")
    assert len(app.state["calls"]) == calls  # rolled back: the view is not called


def test_rollback_compares_with_the_legacy_arms_error_rate() -> None:
    def flaky_legacy(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"legacy is down too"]

    app = Bridge(validator(flaky_legacy), adaptive_threads=False)

    @app.route("/x", methods=["GET"], canary=Canary(share=0.5, fallback=False, min_requests=5))
    async def x(request: Request) -> Response:
        return Response("also down", status=500)

    for _ in range(40):
        get(app, "/x")
    assert app.canary("/x").state == "running"  # both fail alike: the view is no worse


def test_a_legacy_arm_that_has_seen_too_few_requests_is_no_baseline() -> None:
    def down_legacy(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"legacy is down too"]

    app = Bridge(validator(down_legacy), adaptive_threads=False)
    canary = Canary(share=0.5, key="cookie:sid", fallback=False, min_requests=5)

    @app.route("/x", methods=["GET"], canary=canary)
    async def x(request: Request) -> Response:
        return Response("also down", status=500, headers={"x-arm": "view"})

    # One user whose key lands on the view's arm: the legacy arm sees nothing yet.
    user = next(
        f"sid=user{n}"
        for n in range(100)
        if get(app, "/x", cookie=f"sid=user{n}").headers.get(b"x-arm") == b"view"
    )
    control = app.canary("/x")
    control.rollback()
    control.set(0.5)  # a change: the rule counts afresh from here
    for _ in range(10):
        get(app, "/x", cookie=user)
    assert control.state == "running"  # nothing to compare the view's failures with
    for n in range(100):  # everyone else: the legacy arm fails as often
        get(app, "/x", cookie=f"sid=other{n}")
    assert control.state == "running"


def test_set_after_a_rollback_judges_the_view_afresh() -> None:
    app = failing(Canary(share=1.0, max_error_rate=0.2, min_requests=10))
    control = app.canary("/items")
    for _ in range(12):
        get(app, "/items")
    assert control.state == "rolled back"
    control.set(1.0)
    get(app, "/items")
    assert control.state == "running"  # one failure since someone acted is not ten


def test_promote_stops_the_rollback_rule_and_keeps_the_fallback() -> None:
    app = failing(Canary(share=0.1, max_error_rate=0.2, min_requests=10))
    control = app.canary("/items")
    control.promote()
    for _ in range(15):
        assert arm_of(get(app, "/items")) == "legacy"
    assert (control.state, control.share) == ("promoted", 1.0)


def test_controls_from_a_thread() -> None:
    import threading

    app = build(0.2)
    control = app.canary("/items/<int:item_id>")
    thread = threading.Thread(target=control.set, args=(0.7,))
    thread.start()
    thread.join()
    assert (control.state, control.share) == ("running", 0.7)
    control.rollback()
    assert (control.state, control.share) == ("rolled back", 0.0)
    with pytest.raises(ValueError, match="not -1"):
        control.set(-1)


# -- counts -------------------------------------------------------------------------------------


def test_prometheus_lines_per_arm() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app = failing(Canary(share=1.0), metrics_path="/_bridge/metrics")
    get(app, "/items")
    text = get(app, "/_bridge/metrics").body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    view = (("arm", "view"), ("route", "/items"))
    assert samples[("bridge_canary_requests_total", view)] == 1
    assert samples[("bridge_canary_fallbacks_total", view)] == 1
    assert samples[("bridge_canary_duration_seconds_count", view)] == 1
    assert samples[("bridge_canary_share", (("route", "/items"),))] == 1
    running = (("route", "/items"), ("state", "running"))
    assert samples[("bridge_canary_state", running)] == 1


# -- the control channel, two apps on one memory broadcast (two workers in one process) --------


@pytest.fixture
def pair() -> Iterator[tuple[Bridge, Bridge]]:
    hub = Broadcast("memory://")
    yield build(0.1, broadcast=hub), build(0.1, broadcast=hub)


def test_a_change_on_one_app_reaches_the_other(pair: tuple[Bridge, Bridge]) -> None:
    one, two = pair

    async def main() -> None:
        async with Lifespans(one, two):
            one.canary("/items/<int:item_id>").set(0.3)
            await until(lambda: two.canary("/items/<int:item_id>").share == 0.3)
            two.canary("/items/<int:item_id>").rollback()
            await until(lambda: one.canary("/items/<int:item_id>").state == "rolled back")
            # a third app starting later replays the channel: it starts rolled back too
            three = build(0.1, broadcast=one.broadcast)
            async with Lifespans(three):
                assert three.canary("/items/<int:item_id>").state == "rolled back"

    asyncio.run(main())


async def until(condition: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the change did not arrive"
        await asyncio.sleep(0.01)


class Lifespans:
    """Run the lifespan of each app for the block: startup on entry, shutdown on exit."""

    def __init__(self, *apps: Bridge) -> None:
        self.apps = apps
        self.inboxes: list[asyncio.Queue[dict[str, Any]]] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> None:
        for app in self.apps:
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            inbox.put_nowait({"type": "lifespan.startup"})
            self.inboxes.append(inbox)
            self.tasks.append(asyncio.ensure_future(app({"type": "lifespan"}, inbox.get,
                                                        started.put)))  # fmt: skip
            assert (await started.get())["type"] == "lifespan.startup.complete"

    async def __aexit__(self, *exc: object) -> None:
        for inbox in self.inboxes:
            inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.gather(*self.tasks)


def test_a_change_for_other_settings_is_not_applied() -> None:
    """A deploy that changes the Canary settings starts from the code, not the channel."""
    hub = Broadcast("memory://")
    old = build(0.1, broadcast=hub)
    new = build(Canary(share=0.1, key="cookie:sid"), broadcast=hub)

    async def main() -> None:
        async with Lifespans(old):
            old.canary("/items/<int:item_id>").rollback()
            async with Lifespans(new):
                assert new.canary("/items/<int:item_id>").state == "running"
                new.canary("/items/<int:item_id>").set(0.4)
                same = build(Canary(share=0.1, key="cookie:sid"), broadcast=hub)
                async with Lifespans(same):  # the same settings: the same state
                    assert same.canary("/items/<int:item_id>").share == 0.4
            assert old.canary("/items/<int:item_id>").state == "rolled back"

    asyncio.run(main())


def test_junk_on_the_control_channel_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    app = build(0.1)
    control = app.canary("/items/<int:item_id>")
    fingerprint = control.config.fingerprint
    junk: list[Any] = [
        "rollback",
        ["rule"],
        {"rule": "/items/<int:item_id>", "state": "rolled back", "share": 0.0},  # no config
        {"rule": "/elsewhere", "state": "promoted", "share": 1.0, "config": fingerprint},
        {"rule": "/items/<int:item_id>", "state": "paused", "share": 0.5, "config": fingerprint},
        {"rule": "/items/<int:item_id>", "state": "running", "share": 7, "config": fingerprint},
        {"rule": "/items/<int:item_id>", "state": "running", "share": True, "config": fingerprint},
    ]

    async def main() -> None:
        async with Lifespans(app):
            for data in junk:
                await app.broadcast.publish("bridge.canary", data)
            good = {"rule": "/items/<int:item_id>", "state": "running", "share": 0.3,
                    "config": fingerprint}  # fmt: skip
            await app.broadcast.publish("bridge.canary", good)
            await until(lambda: control.share == 0.3)

    with caplog.at_level(logging.WARNING, logger="bridge"):
        asyncio.run(main())
    assert control.state == "running"
    ignored = [r for r in caplog.records if "Ignored a canary control message" in r.message]
    assert len(ignored) == 3  # the rest name no canary of these settings: silently not ours


def test_a_view_in_legacy_middleware_falls_back_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def middleware(app: Any) -> Any:
        def wrapped(environ: Environ, start_response: Any) -> Any:
            environ["legacy.user"] = "ada"
            return app(environ, start_response)

        return validator(wrapped)

    app = Bridge(LEGACY, adaptive_threads=False)

    @app.route("/items", methods=["GET"], middleware=middleware, canary=1.0)
    def items(request: Request) -> Response:
        raise RuntimeError(f"broken for {request.environ['legacy.user']}")

    with caplog.at_level(logging.WARNING, logger="bridge"):
        client = get(app, "/items")
    assert arm_of(client) == "legacy"
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "the legacy app answered instead" in record.message
    assert record.exc_info is not None and "broken for ada" in str(record.exc_info[1])
