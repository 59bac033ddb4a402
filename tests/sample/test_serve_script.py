"""``scripts/serve`` as a newcomer runs it: the key that signs sessions is made once, at
random, and kept in the data directory, so a cookie signed with the key published in
``sample_wsgi_app/settings.py`` is worth nothing there."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sample_wsgi_app import SESSION_COOKIE, dump_session
from sample_wsgi_app.settings import DEV_SECRET_KEY
from tests.servers import ROOT, free_port, poll_until_ready, stop

pytestmark = pytest.mark.live

# scripts/serve may first bring .venv up to date with pyproject.toml: allow for pip.
START_TIMEOUT = 180.0


@contextlib.contextmanager
def serve_script(data_dir: Path, log: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SAMPLE_SECRET_KEY", "SAMPLE_DEV_KEY")}
    env.update(HOST="127.0.0.1", PORT=str(port), SAMPLE_DATA_DIR=str(data_dir))
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["sh", str(ROOT / "scripts" / "serve")],
            cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True,
        )  # fmt: skip
        try:
            poll_until_ready(
                process,
                lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200,
                "scripts/serve",
                output=lambda: log.read_text(errors="replace")[-3000:],
                timeout=START_TIMEOUT,
            )
            yield base
        finally:
            stop(process)


def test_scripts_serve_signs_sessions_with_a_key_of_its_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serve_script(data_dir, tmp_path / "serve.log") as base:
        key_file = data_dir / "secret_key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 40 and key != DEV_SECRET_KEY
        forged = dump_session({"user_id": 1, "generation": 0, "csrf_token": "x"}, DEV_SECRET_KEY)
        with httpx.Client(base_url=base, timeout=10) as http:
            http.cookies.set(SESSION_COOKIE, forged)
            assert http.get("/api/me").json() == {"user": None}
            assert http.get("/items/new").status_code == 303  # to the login page
            created = http.post("/api/items", json={"title": "x"}, headers={"X-CSRF-Token": "x"})
            assert created.status_code in (401, 403)
            # A cookie signed with the kept key is believed: it is that key that signs.
            http.cookies.clear()
            real = dump_session({"user_id": 1, "generation": 0, "csrf_token": "x"}, key)
            http.cookies.set(SESSION_COOKIE, real)
            assert http.get("/api/me").json() == {"user": "admin"}
    assert "session key in" in (tmp_path / "serve.log").read_text()
