"""Memory of idle connections, measured in an interpreter of its own.

A tracer such as coverage's allocates for every frame it follows, and bridge's open
connection has more frames than the feeds it is held against: measured in the test
process under ``scripts/test``'s coverage run, the tracer's share would count as
bridge's. A fresh interpreter, with coverage's subprocess hooks left out of its
environment, counts what the connections themselves keep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import asyncio, json
from bench import apps, feeds, idle_memory

async def main():
    bridge, _ = await idle_memory.measure(feeds.bridge_feed(apps.micro, 4), {kind!r}, {count})
    other, _ = await idle_memory.measure({other}, {kind!r}, {count})
    print(json.dumps([bridge, other]))

asyncio.run(main())
"""


def kib_per_connection(kind: str, other: str, count: int = 300) -> tuple[float, float]:
    """KiB per open ``kind`` connection ("sse" or "ws") for ``bench.feeds.bridge_feed``
    and for ``other`` (a Python expression over ``apps`` and ``feeds``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COV_CORE_", "COVERAGE_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    code = _MEASURE.format(kind=kind, count=count, other=other)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"The memory measurement failed:\n{done.stderr}")
    bridge, measured = json.loads(done.stdout.strip().splitlines()[-1])
    return float(bridge), float(measured)
