"""Canary routes under ``bridge serve --workers 2``: the same split in every worker, and a
change made in one worker reaching the other through Redis."""

from __future__ import annotations

import http.client
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.broadcast.redis_server import redis_server
from tests.serve.test_cli_live import Served, serve

pytestmark = pytest.mark.live

APP = "tests.apps.canary_app:app"


def answer(served: Served, path: str, cookie: str | None = None) -> tuple[str, str]:
    """``(what, pid)`` of one answer, on a fresh connection so either worker may take it."""
    url = urlsplit(served.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("GET", path, headers={"cookie": f"sid={cookie}"} if cookie else {})
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, text
    what, pid = text.rsplit("|", 1)
    return what, pid


def both_up(served: Served) -> None:
    """Wait (bounded) until both workers answer: the second may still be starting."""
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.add(answer(served, "/setting")[1])
    assert len(pids) == 2, served.output()


def test_200_cookies_split_near_half_and_each_stays_on_its_arm_in_both_workers(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, APP, "--workers", "2") as served:
        arms: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        both_up(served)
        for n in range(200):
            cookie = f"user-{n}"
            # Until both workers have answered this cookie (or ten tries): each answer
            # is on a fresh connection, so the kernel picks the worker.
            for _ in range(10):
                arm, pid = answer(served, "/split", cookie)
                arms[cookie][pid].add(arm)
                if len(arms[cookie]) == 2:
                    break
        pids = {pid for by_pid in arms.values() for pid in by_pid}
        assert len(pids) == 2, served.output()
        one_arm = {cookie: set().union(*by_pid.values()) for cookie, by_pid in arms.items()}
        assert all(len(found) == 1 for found in one_arm.values()), one_arm
        in_both = [cookie for cookie, by_pid in arms.items() if len(by_pid) == 2]
        assert len(in_both) >= 100, f"only {len(in_both)} cookies reached both workers"
        views = sum(found == {"view"} for found in one_arm.values())
        assert 60 <= views <= 140  # 30 % to 70 %


def test_set_on_one_worker_reaches_the_other_through_redis(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path) as redis,
        serve(tmp_path, APP, "--workers", "2", "--broadcast", redis.url) as served,
    ):
        # Both workers follow the channel once each has answered once; the second may
        # still be starting when the first answers.
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            setting, pid = answer(served, "/setting")
            seen[pid] = setting
        assert sorted(seen.values()) == ["running|0.5"] * 2, seen
        with httpx.Client(base_url=served.url, timeout=10) as client:
            response = client.post("/control", params={"share": "0.9"})
        assert response.status_code == 200, response.text
        setter = response.text
        assert setter in seen
        # Poll the other worker with a bounded deadline (it normally takes milliseconds).
        deadline = time.monotonic() + 10
        other = None
        while time.monotonic() < deadline:
            setting, pid = answer(served, "/setting")
            if pid != setter:
                other = setting
                if setting == "running|0.9":
                    break
        assert other == "running|0.9", served.output()


def test_the_startup_line_says_when_changes_stay_in_one_worker(tmp_path: Path) -> None:
    with serve(tmp_path, APP, "--workers", "2") as served:
        line = served.output().splitlines()[0]
    assert line.endswith(
        "3 routes migrated, 1 canary route whose changes (set, rollback, promote) reach only "
        "the worker that makes them on memory://: give --broadcast redis://HOST:6379/0 to "
        "reach all 2"
    ), line
    with (
        redis_server(tmp_path) as redis,
        serve(tmp_path, APP, "--workers", "2", "--broadcast", redis.url) as served,
    ):
        line = served.output().splitlines()[0]
    assert line.endswith("3 routes migrated, 1 canary route"), line


def test_the_counts_per_arm_are_the_whole_servers(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with serve(tmp_path, APP, "--workers", "2") as served:
        both_up(served)
        answered: dict[str, set[str]] = defaultdict(set)  # arm -> the workers that served it
        counts = {"view": 0, "legacy": 0}
        for n in range(100):
            arm, pid = answer(served, "/split", f"user-{n}")
            answered[arm].add(pid)
            counts[arm] += 1
        assert len(answered["view"] | answered["legacy"]) == 2  # both workers took some
        text = served.get("/_bridge/metrics").text
        data = served.get("/_bridge/data.json").json()
    samples = {
        (s.name, s.labels.get("arm")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("route") == "/split"
    }
    for arm in ("view", "legacy"):
        assert samples[("bridge_canary_requests_total", arm)] == counts[arm]
        assert samples[("bridge_canary_duration_seconds_count", arm)] == counts[arm]
    [canary] = data["canary"]
    assert canary["whole_server"] is True
    assert {arm: c["requests"] for arm, c in canary["arms"].items()} == counts
    assert canary["arms"]["view"]["p99"] is not None
