"""The wheel users install into their own project holds bridge, and nothing else at top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.live  # builds the wheel with pip in a subprocess (a few seconds)


def test_the_wheel_contains_bridge_only(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("bridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "bridge",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert "bridge/gunicorn.py" in names
    # Package data a user's tools rely on: the typing marker (type checkers ignore an
    # untyped package's annotations without it), the dashboard's page, the licence.
    assert {"bridge/py.typed", "bridge/pages/dashboard.html"} <= set(names)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bridge = bridge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_checkout_still_imports_the_sample_app() -> None:
    """scripts/serve and scripts/test use an editable install that keeps the checkout importable."""
    done = subprocess.run(
        [sys.executable, "-c", "import sample_wsgi_app, bridge; print(sample_wsgi_app.__file__)"],
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(ROOT)
