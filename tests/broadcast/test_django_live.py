"""docs/recipes/django-live.md, pasted whole into a Django project: post_save publishes
through transaction.on_commit to app.broadcast on a real Redis; a rollback publishes
nothing; the recipe's event stream resumes from Last-Event-ID."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.broadcast.redis_server import RedisServer
from tests.servers import ROOT


def test_committed_saves_are_published_once_and_rolled_back_ones_never(
    redis: RedisServer, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.broadcast.django_live_project", str(tmp_path), redis.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    heard = json.loads(done.stdout.strip().splitlines()[-1])
    assert heard["url"] == redis.url
    assert heard["created"] == 201 and heard["rolled_back"] == 409 and heard["again"] == 201
    assert heard["first"] == {"type": "created", "id": 1, "text": "ada"}
    assert heard["second"]["text"] == "cy"
    assert heard["more"] is False
    resumed = heard["resumed"]
    assert resumed.startswith(f"id: {heard['second_id']}\nevent: item\ndata: "), resumed
    assert '"text":"cy"' in resumed and "bob" not in resumed and "ada" not in resumed
