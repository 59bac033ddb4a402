"""Shadow routes a team can trust: the budget holds under hung views, comparisons leave
the loop free, reports keep no secrets, noise is learned, sampling is sticky."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.shadow import Shadow
from bridge.shadow.compare import Difference
from bridge.shadow.stats import MAX_NOISE
from tests.asgi import Client, http_scope

Environ = dict[str, Any]
BIG = {"rows": [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(20_000)]}


def json_app(environ: Environ, start_response: Any) -> list[bytes]:
    """Legacy: /items/<id> and /me as small JSON, /big as about 1 MiB of JSON, /stamp with a
    timestamp of its own on every answer, anything else a 404."""
    path = environ["PATH_INFO"]
    while environ["wsgi.input"].read(65536):
        pass
    data: Any = {"error": "not found"}
    status = "404 Not Found"
    if path.startswith("/items/") or path == "/me":
        status, data = "200 OK", {"id": 1, "title": "Tea"}
    elif path == "/big":
        status, data = "200 OK", BIG
    elif path == "/stamp":
        status, data = "200 OK", {"id": 1, "at": time.time_ns()}
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def make(**options: Any) -> Bridge:
    return Bridge(validator(json_app), **options)


async def get(app: Bridge, path: str, **scope: Any) -> Client:
    body = scope.pop("body", b"")
    client = Client([body])
    await client.run(app, http_scope(path, **scope))
    return client


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def until(condition: Any, what: str) -> None:
    """Wait (a bounded number of loop turns) for ``condition()``: no timed assertion."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


# -- the budget -------------------------------------------------------------------------------


def test_eight_hung_def_views_under_max_threads_8_leave_the_legacy_app_its_threads() -> None:
    app = make(max_threads=8)
    release = threading.Event()
    entered: list[int] = []

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(timeout=0.05))
    def hung(request: Request, item_id: int) -> Response:
        entered.append(item_id)
        release.wait(30)  # an HTTP call with no timeout
        return Response(json.dumps({"id": 1, "title": "Tea"}), mimetype="application/json")

    stats: Any = None

    async def go() -> list[Client]:
        nonlocal stats
        (stats,) = app.shadows.routes
        clients = [await get(app, f"/items/{i}") for i in range(8)]
        # The one run the shadows' share allows times out, and is failed at once...
        await until(lambda: stats.failed == 1, "the hung run counted as failed")
        # ...but keeps its slot and its thread until the view returns.
        assert (app.shadows.running, app.shadows.threads_held) == (1, 1)
        clients += [await get(app, f"/items/{i}") for i in range(8)]
        clients.append(await get(app, "/elsewhere"))
        release.set()
        await app.shadows.idle()
        assert (app.shadows.running, app.shadows.threads_held) == (0, 0)
        clients.append(await get(app, "/items/1"))  # shadowed again: the slot is back
        await app.shadows.idle()
        return clients

    clients = run(go())
    assert [c.status for c in clients] == [200] * 16 + [404, 200]
    assert app.shadows.thread_share == 1  # a fifth of 8 threads, rounded down
    assert entered == [0, 1]
    assert (stats.failed, stats.matched, stats.skipped) == (1, 1, 15)
    assert stats.skips == {"share": 15}
    assert stats.failures[0]["error"] == "The view did not answer within 0.05 s."


def test_the_shadows_share_is_a_fifth_of_the_pool_and_never_its_last_thread() -> None:
    assert [make(max_threads=n).shadows.thread_share for n in (1, 2, 4, 8, 32, 100)] == [
        0, 1, 1, 1, 6, 20,
    ]  # fmt: skip


def test_async_views_do_not_take_the_thread_share_and_a_hung_one_is_cancelled() -> None:
    app = make(max_threads=2, max_shadows=3)
    cancelled: list[int] = []

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(timeout=0.05))
    async def stuck(request: Request, item_id: int) -> Response:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(item_id)
            raise
        raise AssertionError("unreachable")

    async def go() -> None:
        for i in range(3):
            await get(app, f"/items/{i}")
        assert app.shadows.running == 3 and app.shadows.threads_held == 0
        await app.shadows.idle()

    run(go())
    assert sorted(cancelled) == [0, 1, 2]
    assert app.shadows.routes[0].failed == 3


# -- the comparison leaves the loop free ----------------------------------------------------------


def test_two_mebibyte_json_bodies_are_compared_in_a_thread_while_the_loop_serves() -> None:
    app = make(max_threads=8)
    inside = threading.Event()
    proceed = threading.Event()
    where: list[bool] = []

    def normalise(body: Any) -> Any:
        try:
            asyncio.get_running_loop()
            where.append(True)  # on the loop
        except RuntimeError:
            where.append(False)
        inside.set()
        proceed.wait(30)
        return body

    shadow = Shadow(max_body=2 * 1024 * 1024, normalise=normalise)

    @app.route("/big", methods=["GET"], shadow=shadow)
    async def big(request: Request) -> Response:
        return Response(json.dumps(BIG, indent=1), mimetype="application/json")

    async def go() -> Client:
        client = await get(app, "/big")
        assert len(client.body) > 1024 * 1024
        await until(inside.is_set, "the comparison started")
        # The comparison is under way, blocked in its thread: the loop still serves.
        other = await get(app, "/items/1")
        assert other.status == 200 and app.shadows.routes[0].matched == 0
        proceed.set()
        await app.shadows.idle()
        return other

    run(go())
    assert where == [False, False], "both sides normalised off the event loop"
    assert app.shadows.routes[0].matched == 1


def test_small_bodies_are_compared_on_the_loop_without_a_thread() -> None:
    app = make()
    where: list[str] = []

    def normalise(body: Any) -> Any:
        where.append(threading.current_thread().name)
        return body

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(normalise=normalise))
    async def item(request: Request, item_id: int) -> Response:
        return Response('{"title": "Tea", "id": 1}', mimetype="application/json")

    run(get(app, "/items/1"))
    run(app.shadows.idle())
    assert where == [threading.main_thread().name] * 2


# -- reports keep no secrets -----------------------------------------------------------------


def test_a_kept_mismatch_shows_neither_the_access_token_nor_the_api_key() -> None:
    app = make(dashboard_path="/_bridge/")
    headers = [(b"content-type", b"application/json"), (b"x-api-key", b"AKIA-header-key"),
               (b"accept", b"application/json")]  # fmt: skip

    @app.route("/me", methods=["POST"], shadow=Shadow(unsafe=True))
    async def me(request: Request) -> Response:
        data = {"id": 1, "title": request.get_json()["api_key"]}  # echoes the secret
        return Response(json.dumps(data), mimetype="application/json",
                        headers={"X-Session-Token": "sess-secret"})  # fmt: skip

    async def go() -> tuple[Client, Client]:
        await get(app, "/me", method="POST", query_string=b"access_token=tok3n&page=2",
                  headers=headers, body=b'{"api_key": "AKIA-body-key"}')  # fmt: skip
        await app.shadows.idle()
        data = await get(app, "/_bridge/data.json")
        (kind,) = json.loads(data.body)["shadow"][0]["kinds"]
        download = await get(app, f"/_bridge/shadow/0/{kind['id']}.json")
        return data, download

    data, download = run(go())
    for answer in (data, download):
        assert answer.status == 200
        text = answer.body.decode()
        for secret in ("tok3n", "AKIA-body-key", "AKIA-header-key", "sess-secret"):
            assert secret not in text
    report = json.loads(download.body)
    assert report["path"] == "/me?access_token&page"
    assert report["request"]["query"] == [["access_token", None], ["page", None]]
    assert report["request"]["headers"] == [
        ["content-type", "application/json"], ["accept", "application/json"]
    ]  # fmt: skip
    assert report["request"]["other_headers"] == ["x-api-key"]
    assert report["request"]["body"] is None and report["shadow"]["body"] is None
    assert report["shadow"]["other_headers"] == ["x-session-token", "content-length"]
    assert report["differences"] == [
        {"where": "body $.title", "legacy": "a string of 3 chars", "shadow": "a string of 13 chars"}
    ]


def test_the_store_of_one_route_is_bounded_in_bytes_and_says_what_it_left_out() -> None:
    app = make()
    shadow = Shadow(keep=100, store_bytes=4096, show_bodies=True, keep_body_chars=400)

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=shadow)
    async def item(request: Request, item_id: int) -> Response:
        return Response(json.dumps({f"field{item_id}": "x" * 300}), mimetype="application/json")

    async def go() -> None:
        for i in range(40):  # forty kinds: each a field of its own, one run at a time
            await get(app, f"/items/{i}")
            await app.shadows.idle()

    run(go())
    (stats,) = app.shadows.routes
    snapshot = stats.snapshot()
    kept = len(snapshot["kinds"])
    assert 1 <= kept < 40 and snapshot["unkept"] == 40 - kept
    assert stats.store_used <= 4096
    assert len(json.dumps(snapshot["kinds"])) <= 4096 + 200 * kept  # the ids and counts


def test_the_download_of_a_report_asks_the_dashboards_access_and_a_real_id() -> None:
    app = make(dashboard_path="/_bridge/")
    app.route("/items/<int:item_id>", methods=["GET"], shadow=True)(
        lambda request, item_id: Response('{"id": 2}', mimetype="application/json")
    )

    async def go() -> list[int]:
        await get(app, "/items/1")
        await app.shadows.idle()
        kind_id = app.shadows.routes[0].snapshot()["kinds"][0]["id"]
        answers = [
            await get(app, f"/_bridge/shadow/0/{kind_id}.json"),
            await get(app, f"/_bridge/shadow/0/{kind_id}.json", client=("203.0.113.9", 1)),
            await get(app, "/_bridge/shadow/0/000000000000.json"),
            await get(app, f"/_bridge/shadow/7/{kind_id}.json"),
            await get(app, "/_bridge/shadow/x"),
        ]
        return [a.status for a in answers]

    assert run(go()) == [200, 403, 404, 404, 404]


# -- noise ---------------------------------------------------------------------------------------


def test_a_timestamp_that_differs_between_legacy_runs_is_noise_and_the_route_gets_ready() -> None:
    def stamped(request: Request) -> Response:
        return Response(json.dumps({"id": 1, "at": time.time_ns()}), mimetype="application/json")

    noisy, plain = make(dashboard_path="/_bridge/"), make()
    noisy.route("/stamp", methods=["GET"], shadow=Shadow(noise=True, ready_after=5))(stamped)
    plain.route("/stamp", methods=["GET"], shadow=Shadow(ready_after=5))(stamped)

    async def go() -> Client:
        for _ in range(6):
            await get(noisy, "/stamp")
            await get(plain, "/stamp")
            await noisy.shadows.idle()
            await plain.shadows.idle()
        return await get(noisy, "/_bridge/data.json")

    data = run(go())
    (learned,) = noisy.shadows.routes
    (naive,) = plain.shadows.routes
    assert learned.ready and learned.matched == 6 and learned.noise_runs >= 1
    assert not naive.ready and naive.mismatched == 6
    (shown,) = json.loads(data.body)["shadow"]
    assert shown["noise_fields"] == [{"kind": "body $.at", "seen": learned.noise_runs}]


def test_noise_needs_a_safe_route() -> None:
    try:
        Shadow(noise=True, unsafe=True)
    except ValueError as exc:
        assert "write twice" in str(exc)
    else:
        raise AssertionError("accepted")


# -- sticky sampling -------------------------------------------------------------------------------


def test_sampling_by_a_cookie_shadows_all_of_a_users_requests_or_none() -> None:
    app = make()
    seen: dict[str, int] = {}

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(rate=0.5, key="cookie:sid"))
    async def item(request: Request, item_id: int) -> Response:
        sid = request.cookies["sid"]
        seen[sid] = seen.get(sid, 0) + 1
        return Response('{"id": 1, "title": "Tea"}', mimetype="application/json")

    async def go() -> None:
        for _ in range(3):
            for user in range(60):  # one run at a time: none skipped for the budget
                await get(app, "/items/1", headers=[(b"cookie", f"sid=user{user}".encode())])
                await app.shadows.idle()

    run(go())
    assert set(seen.values()) == {3}, "each user: every request shadowed, or none"
    assert 15 <= len(seen) <= 45
    stats = app.shadows.routes[0]
    assert stats.matched == 3 * len(seen) and stats.unsampled == 3 * (60 - len(seen))
    assert stats.snapshot()["key"] == "cookie:sid"


def test_with_no_thread_to_spare_an_async_noisy_route_is_compared_without_learning() -> None:
    app = make(max_threads=1)  # the shadows' share of one thread is none

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(noise=True))
    async def item(request: Request, item_id: int) -> Response:
        return Response('{"id": 1, "title": "Tea"}', mimetype="application/json")

    async def go() -> None:
        for _ in range(3):
            await get(app, "/items/1")
        await app.shadows.idle()

    run(go())
    (stats,) = app.shadows.routes
    assert (stats.matched, stats.skipped, stats.noise_runs) == (3, 0, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "session"}, 'The key "session" must be "cookie:NAME", "header:NAME" or "client"'),
        ({"key": 7}, 'key= takes a string such as "cookie:sessionid", not 7.'),
        ({"noise_rate": 0}, "Shadow noise_rate must be a number above 0 and at most 1, not 0."),
        ({"store_bytes": -1}, "Shadow store_bytes must be an int of at least 0, not -1."),
        ({"noise": True, "unsafe": True}, "with unsafe=True a request may write"),
    ],
)
def test_bad_new_options_are_refused_with_a_sentence(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        Shadow(**options)
    assert message in str(raised.value)


def test_show_query_and_show_bodies_keep_what_a_staging_route_may_show() -> None:
    app = make()
    shown = Shadow(unsafe=True, show_query=True, show_bodies=True)

    @app.route("/me", methods=["POST"], shadow=shown)
    async def me(request: Request) -> Response:
        return Response('{"id": 2, "title": "Tea"}', mimetype="application/json")

    async def go() -> None:
        await get(app, "/me", method="POST", query_string=b"page=2&q=tea",
                  headers=[(b"content-type", b"application/json")], body=b'{"a": 1}')  # fmt: skip
        await app.shadows.idle()

    run(go())
    (report,) = app.shadows.routes[0].mismatches
    assert report["path"] == "/me?page=2&q=tea"
    assert report["request"]["query"] == [["page", "2"], ["q", "tea"]]
    assert report["request"]["body"] == '{"a": 1}'
    assert report["differences"] == [{"where": "body $.id", "legacy": "1", "shadow": "2"}]
    assert report["legacy"]["body"] == '{"id": 1, "title": "Tea"}'


def test_a_flaky_legacy_second_answer_teaches_no_noise_and_blames_no_view() -> None:
    calls: list[int] = []

    def flaky(environ: Environ, start_response: Any) -> list[bytes]:
        calls.append(1)
        if len(calls) % 2 == 0:  # every second answer (the noise run's) fails
            raise RuntimeError("the legacy app's own bad moment")
        return json_app(environ, start_response)

    app = Bridge(validator(flaky), max_threads=4)

    @app.route("/items/<int:item_id>", methods=["GET"], shadow=Shadow(noise=True))
    async def item(request: Request, item_id: int) -> Response:
        return Response('{"id": 1, "title": "Tea"}', mimetype="application/json")

    async def go() -> None:
        for _ in range(3):
            assert (await get(app, "/items/1")).status == 200
            await app.shadows.idle()

    run(go())
    (stats,) = app.shadows.routes
    assert (stats.matched, stats.failed, stats.mismatched) == (3, 0, 0)
    assert stats.noise == {} and stats.noise_runs == 0


def test_learned_noise_is_bounded_per_route() -> None:
    app = make()

    @app.route("/stamp", methods=["GET"], shadow=Shadow(noise=True, noise_rate=1.0))
    async def stamp(request: Request) -> Response:
        return Response('{"id": 1}', mimetype="application/json")

    (stats,) = app.shadows.routes
    for round_ in range(20):  # twenty double runs, each with ten new varying fields
        stats.learn_noise([Difference(f"body $.f{round_}_{i}", "1", "2") for i in range(10)])
    assert len(stats.noise) == MAX_NOISE and stats.noise_runs == 20
    assert len(json.dumps(stats.snapshot()["noise_fields"])) < 8 * 1024
