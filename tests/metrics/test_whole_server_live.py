"""With ``--workers 2``, /_bridge/metrics and the dashboard's data count the whole server,
whichever worker answers: prometheus-client's multiprocess files, summed."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
import websockets

from tests.broadcast.cluster import instance, shared_data

pytestmark = pytest.mark.live

REQUESTS = 40
SCRAPES = 8
SERIES = re.compile(r"^bridge_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def requests_by_kind(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for match in SERIES.finditer(text):
        kind = re.search(r'kind="([^"]+)"', match["labels"])
        assert kind is not None
        totals[kind[1]] = totals.get(kind[1], 0) + float(match["value"])
    return totals


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match is not None, text
    return float(match[1])


def test_metrics_and_dashboard_count_every_worker(tmp_path: Path) -> None:
    data = shared_data(tmp_path / "data")
    with instance("memory://", data, tmp_path / "serve.log") as base:
        asyncio.run(count(base))


async def count(base: str) -> None:
    # A new connection per request, so the kernel spreads them over both workers.
    for _ in range(REQUESTS):
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            assert (await http.get("/items")).status_code == 200
    ws_url = base.replace("http://", "ws://") + "/ws/items"
    for _ in range(2):
        async with websockets.connect(ws_url, open_timeout=20) as ws:
            assert json.loads(await ws.recv()) == {"type": "ready"}
    # Each worker adds its counts to the shared files four times a second: wait for
    # the first scrape that has them all, then every scrape must agree.
    for _ in range(100):
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            text = (await http.get("/_bridge/metrics")).text
        if requests_by_kind(text) == {"legacy": REQUESTS, "websocket": 2}:
            break
        await asyncio.sleep(0.1)
    for _ in range(SCRAPES):
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            text = (await http.get("/_bridge/metrics")).text
            snapshot = (await http.get("/_bridge/data.json")).json()
        # Websocket connections are their own kind, not legacy requests that 404.
        assert requests_by_kind(text) == {"legacy": REQUESTS, "websocket": 2}, text
        assert 'bridge_requests_total{kind="websocket",route="/ws/items"} 2.0' in text
        assert 'bridge_thread_wait_seconds_count{kind="websocket"' not in text
        # The histograms are summed too: every request is in one bucket of one worker.
        assert f'duration_seconds_count{{kind="legacy",route="/items"}} {REQUESTS}.0' in text
        assert (
            f'duration_seconds_bucket{{kind="legacy",le="+Inf",route="/items"}} {REQUESTS}.0'
            in text
        )
        # Both workers' pools (8 threads each) are in the sum.
        assert gauge(text, "bridge_pool_size") == 16
        assert snapshot["totals"] == {"legacy": REQUESTS, "migrated": 2}
        assert snapshot["pool"]["size"] == 16
        assert snapshot["workers"] == 2
        routes = {(r["route"], r["kind"]): r for r in snapshot["routes"]}
        assert routes[("/items", "legacy")]["requests"] == REQUESTS
        assert routes[("/items", "legacy")]["p50"] is not None
