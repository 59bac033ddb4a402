"""``bridge.metrics``: counters per kind of request, thread waits, loop lag, the blocking
detector, and the Prometheus text format."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.wrappers import Response

from bridge import Bridge, Request
from bridge.metrics.registry import MAX_LABEL_LENGTH, OTHER_GROUP, Metrics, first_segment
from bridge.metrics.values import BOUNDS, EXPORTED_BOUNDS, Histogram, RouteStats
from tests.asgi import Client, http_scope

Environ = dict[str, Any]


def legacy_app(environ: Environ, start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("the legacy app failed")
    status = "500 Internal Server Error" if path == "/broken" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"legacy " + path.encode("latin-1")]


async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    status = 503 if scope["path"].endswith("/down") else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"mounted"})


def make_app(**options: Any) -> Bridge:
    app = Bridge(validator(legacy_app), **options)

    @app.route("/items/<int:item_id>", methods=["GET"])
    async def item(request: Request, item_id: int) -> Response:
        if item_id == 0:
            raise RuntimeError("no item zero")
        return Response(f"item {item_id}")

    @app.route("/sync", methods=["GET"])
    def sync_view(request: Request) -> Response:
        return Response("sync")

    app.mount("/v2", mounted)
    return app


def get(app: Bridge, path: str, method: str = "GET", **scope: Any) -> Client:
    client = Client()
    asyncio.run(client.run(app, http_scope(path, method=method, **scope)))
    return client


def by_label(app: Bridge) -> dict[tuple[str, str], dict[str, Any]]:
    assert app.metrics is not None
    return {(r["route"], r["kind"]): r for r in app.metrics.snapshot()["routes"]}


# -- histograms and grouping -------------------------------------------------------------


def test_first_segment_groups_legacy_paths() -> None:
    assert first_segment("/items/7") == "/items"
    assert first_segment("/items") == "/items"
    assert first_segment("/") == "/"
    assert first_segment("") == "/"
    assert first_segment("/a/b/c") == "/a"


def test_histogram_percentiles_interpolate_inside_buckets() -> None:
    histogram = Histogram()
    assert histogram.percentile(0.5) is None
    for _ in range(90):
        histogram.observe(0.001)
    for _ in range(10):
        histogram.observe(0.5)
    assert histogram.count == 100
    assert histogram.sum == pytest.approx(90 * 0.001 + 10 * 0.5)
    # 0.001 is a bucket bound, so the median lands at most one bucket below it.
    assert 0.0008 <= histogram.percentile(0.5) <= 0.001  # type: ignore[operator]
    assert 0.4 <= histogram.percentile(0.99) <= 0.5  # type: ignore[operator]
    histogram.observe(1e6)  # past the last bound: counted, reported as the last bound
    assert histogram.percentile(1.0) == BOUNDS[-1]


def test_exported_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram()
    for value in (0.00001, 0.003, 0.003, 7.0, 1000.0):
        histogram.observe(value)
    pairs = histogram.cumulative()
    assert [bound for bound, _ in pairs[:-1]] == list(EXPORTED_BOUNDS)
    assert pairs[-1] == (float("inf"), 5)
    counts = [count for _, count in pairs]
    assert counts == sorted(counts)
    assert dict(pairs)[0.001] == 1
    assert dict(pairs)[0.005] == 3
    assert dict(pairs)[10.0] == 4


def test_legacy_groups_are_capped_with_an_other_group() -> None:
    metrics = Metrics(max_groups=2, label_after=1)
    assert metrics.legacy_stats("/a/1").route == "/a"
    assert metrics.legacy_stats("/b").route == "/b"
    assert metrics.legacy_stats("/c/3").route == OTHER_GROUP
    assert metrics.legacy_stats("/d").route == OTHER_GROUP
    assert metrics.legacy_stats("/a/2").route == "/a"
    assert len(metrics.snapshot()["routes"]) == 3


def test_the_first_half_of_the_labels_is_open_and_the_rest_is_earned() -> None:
    metrics = Metrics(max_groups=4, label_after=3)
    assert metrics.legacy_stats("/a").route == "/a"
    assert metrics.legacy_stats("/b").route == "/b"
    # Labels three and four: a group counts as other until its third request.
    assert [metrics.legacy_stats("/c").route for _ in range(3)] == [OTHER_GROUP] * 2 + ["/c"]
    assert metrics.legacy_stats("/d").route == OTHER_GROUP
    assert metrics.legacy_stats("/e").route == OTHER_GROUP
    assert metrics.legacy_stats("/e").route == OTHER_GROUP
    assert metrics.legacy_stats("/e").route == "/e"
    assert metrics.legacy_stats("/d").route == OTHER_GROUP  # no label left
    assert metrics.legacy_stats("/c/9").route == "/c"  # labels are kept


def test_a_full_candidate_summary_makes_room_by_counting_every_candidate_down() -> None:
    # max_groups=2: one open label, one to earn, 8 candidates.
    metrics = Metrics(max_groups=2, label_after=4)
    metrics.legacy_stats("/open")
    for _ in range(2):
        metrics.legacy_stats("/busy")
    for i in range(7):
        metrics.legacy_stats(f"/once-{i}")  # the summary is full: 8 candidates
    assert metrics.legacy_stats("/newcomer").route == OTHER_GROUP  # everyone loses one
    assert metrics._candidates == {"/busy": 1}
    assert [metrics.legacy_stats("/busy").route for _ in range(3)] == [OTHER_GROUP] * 2 + ["/busy"]


def test_a_group_longer_than_the_label_limit_never_gets_a_label() -> None:
    metrics = Metrics(label_after=1)
    long = "/" + "x" * MAX_LABEL_LENGTH
    assert metrics.legacy_stats(long).route == OTHER_GROUP
    assert metrics.legacy_stats("/" + "x" * (MAX_LABEL_LENGTH - 1)).route != OTHER_GROUP


def test_label_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="label_after must be at least 1, not 0"):
        Metrics(label_after=0)


def test_a_metrics_object_belongs_to_one_bridge() -> None:
    metrics = Metrics()
    Bridge(legacy_app, metrics=metrics)
    with pytest.raises(ValueError, match="give each Bridge its own"):
        Bridge(legacy_app, metrics=metrics)


# -- counters as requests flow ---------------------------------------------------------------


def test_counters_for_each_kind_of_request() -> None:
    app = make_app()
    assert get(app, "/items/7").body == b"item 7"
    assert get(app, "/items/8").status == 200
    assert get(app, "/items/0").status == 500  # the view raised
    assert get(app, "/items/7", method="POST").body == b"legacy /items/7"  # not migrated
    assert get(app, "/sync").body == b"sync"
    assert get(app, "/v2/x").body == b"mounted"
    assert get(app, "/v2/down").status == 503
    assert get(app, "/").status == 200
    assert get(app, "/broken").status == 500
    assert get(app, "/raise").status == 500

    routes = by_label(app)
    assert {key: (r["requests"], r["errors"]) for key, r in routes.items()} == {
        ("/items/<int:item_id>", "async"): (3, 1),
        ("/sync", "sync"): (1, 0),
        ("/v2", "mount"): (2, 1),
        ("/items", "legacy"): (1, 0),
        ("/", "legacy"): (1, 0),
        ("/broken", "legacy"): (1, 1),
        ("/raise", "legacy"): (1, 1),
    }
    assert routes[("/items/<int:item_id>", "async")]["migrated"] is True
    assert routes[("/items", "legacy")]["migrated"] is False
    for route in routes.values():
        assert route["p50"] is not None and 0 < route["p50"] <= route["p99"] < 5
    snapshot = app.metrics.snapshot()  # type: ignore[union-attr]
    assert snapshot["totals"] == {"legacy": 4, "migrated": 6}
    assert snapshot["pool"]["size"] == app.max_threads
    assert snapshot["pool"]["queue"] == 0
    # A worker counts itself idle just after it hands back its last result, which
    # the loop may read first: busy falls to 0 within moments, not at once.
    wait_until_idle(app)
    assert app.metrics.snapshot()["pool"]["busy"] == 0  # type: ignore[union-attr]


def test_thread_waits_are_recorded_for_threaded_work_only() -> None:
    app = make_app()
    for path in ("/items/1", "/sync", "/a", "/v2/x"):
        get(app, path)
    routes = by_label(app)
    assert routes[("/sync", "sync")]["waits"] == 1
    assert routes[("/a", "legacy")]["waits"] == 1
    assert routes[("/items/<int:item_id>", "async")]["waits"] == 0
    assert routes[("/v2", "mount")]["waits"] == 0


def test_the_wait_for_a_busy_pool_is_measured() -> None:
    started = threading.Event()

    def slow(environ: Environ, start_response: Any) -> list[bytes]:
        started.set()
        time.sleep(0.2)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    app = Bridge(validator(slow), max_threads=1)

    async def main() -> None:
        first = asyncio.ensure_future(Client().run(app, http_scope("/slow")))
        while not started.is_set():
            await asyncio.sleep(0.005)
        await Client().run(app, http_scope("/slow"))
        await first

    asyncio.run(main())
    stats = by_label(app)[("/slow", "legacy")]
    assert stats["waits"] == 2
    # One call started at once, the other waited most of the first one's 0.2 s.
    assert stats["wait_p99"] >= 0.1
    assert app.metrics.snapshot()["pool"]["threads"] == 1  # type: ignore[union-attr]


def test_a_custom_legacy_grouping() -> None:
    def group(path: str) -> str:
        return "/users/<id>" if path.startswith("/users/") else first_segment(path)

    app = Bridge(validator(legacy_app), metrics=Metrics(legacy_group=group))
    get(app, "/users/1")
    get(app, "/users/2")
    get(app, "/about")
    routes = by_label(app)
    assert routes[("/users/<id>", "legacy")]["requests"] == 2
    assert routes[("/about", "legacy")]["requests"] == 1


def test_a_streamed_response_that_fails_counts_as_an_error() -> None:
    def failing(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"part"
        # The first chunk took the headers out: the error can only cut the response.
        raise RuntimeError("failed mid-body")

    app = Bridge(failing)
    client = Client()
    asyncio.run(client.run(app, http_scope("/stream")))
    assert client.status == 200 and not client.finished  # cut: the client sees it
    stats = by_label(app)[("/stream", "legacy")]
    assert (stats["requests"], stats["errors"]) == (1, 1)


def test_metrics_off_leaves_no_hooks() -> None:
    app = make_app(metrics=False)
    assert app.metrics is None
    assert get(app, "/items/3").body == b"item 3"
    assert get(app, "/a").status == 200
    with pytest.raises(ValueError, match="drop metrics=False"):
        Bridge(legacy_app, metrics=False, metrics_path="/_bridge/metrics")


# -- the blocking detector -------------------------------------------------------------------


def blocking_app(**metrics: Any) -> Bridge:
    app = Bridge(validator(legacy_app), metrics=Metrics(**metrics))

    @app.route("/blocks")
    async def blocks(request: Request) -> str:
        time.sleep(0.2)  # the mistake the detector is for
        return "slept"

    @app.route("/awaits")
    async def awaits(request: Request) -> str:
        await asyncio.sleep(0.2)
        return "awaited"

    async def blocking_mount(scope: dict[str, Any], receive: Any, send: Any) -> None:
        time.sleep(0.15)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app.mount("/old-api", blocking_mount)
    return app


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_view_that_sleeps_synchronously_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    app = blocking_app()
    caplog.set_level(logging.WARNING, logger="bridge")
    assert get(app, "/blocks").body == b"slept"
    (message,) = warnings_in(caplog)
    assert '"/blocks"' in message and "blocked the event loop" in message
    assert by_label(app)[("/blocks", "async")]["blocks"] == 1
    # Again within the interval: counted, not logged again.
    get(app, "/blocks")
    assert len(warnings_in(caplog)) == 1
    assert by_label(app)[("/blocks", "async")]["blocks"] == 2


def test_a_view_that_awaits_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    app = blocking_app()
    caplog.set_level(logging.WARNING, logger="bridge")
    assert get(app, "/awaits").body == b"awaited"
    assert warnings_in(caplog) == []
    stats = by_label(app)[("/awaits", "async")]
    assert stats["blocks"] == 0
    assert stats["p50"] >= 0.15  # the await did take its time


def test_a_blocking_mount_is_reported_by_prefix(caplog: pytest.LogCaptureFixture) -> None:
    app = blocking_app()
    caplog.set_level(logging.WARNING, logger="bridge")
    assert get(app, "/old-api/x").body == b"ok"
    (message,) = warnings_in(caplog)
    assert 'mounted app at "/old-api"' in message


def test_the_log_interval_and_threshold_are_settings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge")
    app = blocking_app(block_log_interval=0)
    get(app, "/blocks")
    get(app, "/blocks")
    assert len(warnings_in(caplog)) == 2
    caplog.clear()
    app = blocking_app(block_threshold=None)
    get(app, "/blocks")
    assert warnings_in(caplog) == []
    assert by_label(app)[("/blocks", "async")]["blocks"] == 0


def test_a_stepped_view_still_sees_cancellation() -> None:
    cancelled = asyncio.Event()
    app = Bridge(legacy_app)

    @app.route("/wait")
    async def wait(request: Request) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def main() -> None:
        task = asyncio.ensure_future(Client().run(app, http_scope("/wait")))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cancelled.is_set()
    stats = by_label(app)[("/wait", "async")]
    assert (stats["requests"], stats["errors"]) == (1, 0)


# -- the loop-lag probe --------------------------------------------------------------------


def test_the_probe_starts_lazily_measures_lag_and_records_history() -> None:
    app = Bridge(validator(legacy_app), metrics=Metrics(history_interval=0.25))
    metrics = app.metrics
    assert metrics is not None

    async def main() -> None:
        assert not metrics.snapshot()["loop"]["probing"]
        await Client().run(app, http_scope("/a"))
        assert metrics.snapshot()["loop"]["probing"]
        await asyncio.sleep(0.05)
        time.sleep(0.4)  # hold the loop past the probe's 0.25 s: it wakes about 0.2 s late
        await asyncio.sleep(0.6)
        await metrics.stop()

    asyncio.run(main())
    assert metrics.loop_lag >= 0 and max(p["lag"] for p in metrics.history) >= 0.1
    assert sum(p["legacy"] for p in metrics.history) == 1
    assert all(p["size"] == app.max_threads for p in metrics.history)
    assert not metrics.snapshot()["loop"]["probing"]


def test_lifespan_starts_and_stops_the_probe() -> None:
    app = Bridge(legacy_app)
    metrics = app.metrics
    assert metrics is not None
    seen: list[bool] = []

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            seen.append(metrics.snapshot()["loop"]["probing"])

        inbox.put_nowait({"type": "lifespan.startup"})
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await app({"type": "lifespan"}, inbox.get, send)

    asyncio.run(main())
    assert seen == [True, False]


# -- the Prometheus text format ----------------------------------------------------------------

SAMPLE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*"
    r'(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})?'
    r" (?:[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|Inf)|NaN)$"
)
COMMENT = re.compile(r"^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                     r"(?:counter|gauge|histogram|summary|untyped))$")  # fmt: skip


def test_prometheus_text_has_valid_lines_and_the_right_values() -> None:
    app = make_app()
    metrics = app.metrics
    assert metrics is not None
    metrics.stats('/odd "quoted"\\path\n', "legacy").requests = 4  # labels are escaped
    get(app, "/items/1")
    get(app, "/items/2", method="POST")
    get(app, "/sync")
    text = metrics.prometheus()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert COMMENT.match(line) or SAMPLE.match(line), line
    assert 'bridge_requests_total{route="/items/<int:item_id>",kind="async"} 1' in text
    assert 'bridge_requests_total{route="/items",kind="legacy"} 1' in text
    assert 'bridge_thread_wait_seconds_count{route="/sync",kind="sync"} 1' in text
    assert 'kind="async"' not in text.split("# HELP bridge_thread_wait_seconds")[1]
    assert "bridge_pool_size 32" in text


def wait_until_idle(app: Bridge) -> None:
    """A worker counts itself idle just after it hands back its result, so a reading
    taken at once may still see it busy: wait for it, at most 5 s."""
    deadline = time.monotonic() + 5
    while app.pool.busy and time.monotonic() < deadline:
        time.sleep(0.01)


def test_prometheus_text_parses_with_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    app = make_app()
    for path in ("/items/1", "/items/0", "/a/b", "/sync", "/v2/x"):
        get(app, path)
    assert app.metrics is not None
    wait_until_idle(app)
    families = {f.name: f for f in parser.text_string_to_metric_families(app.metrics.prometheus())}
    assert families["bridge_requests"].type == "counter"
    assert families["bridge_request_duration_seconds"].type == "histogram"
    requests = {
        (s.labels["route"], s.labels["kind"]): s.value
        for s in families["bridge_requests"].samples
        if s.name == "bridge_requests_total"
    }
    assert requests[("/items/<int:item_id>", "async")] == 2
    assert requests[("/a", "legacy")] == 1
    errors = {
        s.labels["route"]: s.value
        for s in families["bridge_errors"].samples
        if s.name == "bridge_errors_total"
    }
    assert errors["/items/<int:item_id>"] == 1 and errors["/a"] == 0
    buckets = [
        s
        for s in families["bridge_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/sync"
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 1
    assert families["bridge_pool_busy"].samples[0].value == 0


def test_route_stats_know_what_is_migrated() -> None:
    assert RouteStats("/x", "mount").migrated
    assert RouteStats("/x", "sync").migrated
    assert not RouteStats("/x", "legacy").migrated
