"""The metrics' memory is bounded whatever the paths: measured with tracemalloc over
hostile traffic in process, and the labels a flood of paths can take."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

from bridge import Bridge
from bridge.metrics.registry import OTHER_GROUP, Metrics
from bridge.wsgi.cycle import Outcome
from tests.asgi import Client, http_scope

Environ = dict[str, Any]

# What the metrics may keep, at most, whatever the traffic: every label, the
# candidates for the earned ones and the path cache (see bridge.metrics).
LIMIT = 1024 * 1024


def legacy_app(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def ok() -> Outcome:
    return Outcome(200)


def growth(paths: Iterable[str], *, bridge: Bridge | None = None) -> int:
    """Bytes still allocated after counting ``paths`` (made one at a time, so the paths
    themselves are not counted), after a warm-up of the same shape. With ``bridge``,
    the requests go through it; without, straight to a ``Metrics`` (much faster)."""
    metrics = Metrics() if bridge is None else bridge.metrics
    assert metrics is not None

    async def serve(some: Iterable[str]) -> None:
        for path in some:
            if bridge is None:
                await metrics.measure(metrics.legacy_for(path), ok())
            else:
                client = Client()
                await client.run(bridge, http_scope(path))
                assert client.status == 200

    async def main() -> int:
        await serve(f"/warm-{i}/x" for i in range(200))
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await serve(paths)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        await metrics.stop()
        return grown

    tracemalloc.start()
    try:
        return asyncio.run(main())
    finally:
        tracemalloc.stop()
        if bridge is not None:
            bridge.pool.shutdown()


def test_11000_distinct_first_segments_grow_memory_by_a_bounded_amount() -> None:
    padding = "p" * 120  # an id-like segment, as a crawler or an attacker sends them
    grown = growth(f"/{i}-{padding}/x" for i in range(11_000))
    assert grown < LIMIT, f"memory grew by {grown / 2**20:.1f} MiB"


def test_11000_distinct_paths_in_one_group_grow_memory_by_a_bounded_amount() -> None:
    padding = "q" * 400
    grown = growth(f"/items/{i}-{padding}" for i in range(11_000))
    assert grown < LIMIT, f"memory grew by {grown / 2**20:.1f} MiB"


def test_2000_requests_with_60_kib_first_segments_grow_memory_by_a_bounded_amount() -> None:
    def paths() -> Iterator[str]:
        for i in range(2_000):
            yield f"/{i:04d}" + "s" * (60 * 1024) + "/x"

    grown = growth(paths(), bridge=Bridge(validator(legacy_app)))
    assert grown < LIMIT, f"memory grew by {grown / 2**20:.1f} MiB"


def serve_paths(metrics: Metrics, paths: Iterable[str]) -> None:
    async def main() -> None:
        for path in paths:
            await metrics.measure(metrics.legacy_for(path), ok())
        await metrics.stop()

    asyncio.run(main())


def legacy_labels(metrics: Metrics) -> dict[str, int]:
    routes = metrics.snapshot()["routes"]
    return {r["route"]: r["requests"] for r in routes if r["kind"] == "legacy"}


def test_the_first_paths_of_a_flood_do_not_take_every_label() -> None:
    metrics = Metrics(max_groups=100)
    serve_paths(metrics, (f"/flood-{i}" for i in range(11_000)))
    labels = legacy_labels(metrics)
    assert len(labels) - 1 <= 50, f"{len(labels) - 1} of the 100 labels went to the flood"
    assert labels[OTHER_GROUP] >= 11_000 - 50


def test_a_busy_route_still_earns_its_own_label_during_and_after_a_flood() -> None:
    metrics = Metrics(max_groups=100)

    def traffic() -> Iterator[str]:
        for i in range(11_000):
            yield f"/flood-{i}"
            if i % 20 == 0:  # the real route: 5 % of the traffic
                yield f"/checkout/{i}"

    serve_paths(metrics, traffic())
    serve_paths(metrics, (f"/checkout/{i}" for i in range(100)))  # the flood is over
    labels = legacy_labels(metrics)
    assert "/checkout" in labels
    # Only the requests before the label was earned counted as "other".
    assert labels["/checkout"] >= 550 + 100 - metrics.label_after
