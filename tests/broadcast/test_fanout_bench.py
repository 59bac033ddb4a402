"""bench/fanout.py at a tiny size: each contender's servers, clients and publisher run,
and every message is counted (the numbers themselves are not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import fanout

pytestmark = pytest.mark.live


@pytest.mark.timeout(180)
def test_every_contender_delivers_and_is_tabled(tmp_path: Path) -> None:
    size = fanout.Size(subscribers=6, client_processes=2, paced_events=4, burst_events=5,
                       paced_rate=10.0)  # fmt: skip
    lines: list[str] = []
    outcomes = []
    with fanout._redis(tmp_path) as url:
        for name in ("bridge Broadcast", "Channels RedisPubSubChannelLayer"):
            outcomes.append(fanout.run_one(name, size, url, tmp_path, lines.append))
    for outcome in outcomes:
        assert outcome.error == ""
        assert len(outcome.latencies_ms) == outcome.expected_paced == 24
        assert outcome.got_burst == outcome.expected_burst == 30
        assert outcome.p50 is not None and outcome.delivered_per_second > 0
    table = fanout.table(outcomes)
    assert table.count("| bridge Broadcast |") == 1
    assert "| 24 / 24 | 30 / 30 |" in table
    fanout.chart(outcomes, tmp_path / "fanout.png")
    assert (tmp_path / "fanout.png").read_bytes().startswith(b"\x89PNG")
