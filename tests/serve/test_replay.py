"""``bridge replay``: a shadow mismatch downloaded from the dashboard, answered again in
process by the legacy app and the view, and compared the same way."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import Bridge
from bridge.serve.cli import main
from bridge.serve.replay import ReplayError, load_report, replay_mismatch
from tests.apps.shadow_apps import shadowed_app
from tests.asgi import Client, http_scope

APPS = "tests.apps.shadow_apps"
ROOT = Path(__file__).resolve().parents[2]


def download(bridge: Bridge, tmp_path: Path, path: str = "/items/1") -> Path:
    """Serve ``path`` (a shadow mismatch), then download its report as the dashboard does."""

    async def go() -> bytes:
        await Client().run(bridge, http_scope(path, query_string=b"lang=en"))
        await bridge.shadows.idle()
        data = Client()
        await data.run(bridge, http_scope("/_bridge/data.json"))
        (route,) = json.loads(data.body)["shadow"]
        (kind,) = route["kinds"]
        report = Client()
        await report.run(bridge, http_scope(f"/_bridge/shadow/0/{kind['id']}.json"))
        assert report.status == 200
        assert report.headers[b"content-disposition"].startswith(b"attachment;")
        return report.body

    file = tmp_path / "mismatch.json"
    file.write_bytes(asyncio.run(go()))
    return file


def test_replay_prints_the_same_comparison_and_exits_1_while_they_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = download(shadowed_app(), tmp_path)
    assert main(["replay", str(file), f"{APPS}:application"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "replayed GET /items/1?lang on /items/<int:item_id>"
    assert "  note: query values were not kept (Shadow(show_query=True) keeps them)" in out
    assert "legacy: 200, view: 200" in out
    at = out.index("1 difference:")
    assert out[at + 1 : at + 4] == ["  body $.title", '    legacy: "Tea"', '    view:   "TEA"']
    assert out[-2:] == ["when it was kept (1 like it):", '  body $.title: "Tea" | "TEA"']


def test_replay_exits_0_once_the_view_is_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = download(shadowed_app(), tmp_path)
    assert main(["replay", str(file), f"{APPS}:fixed_application"]) == 0
    assert "The view now answers as the legacy app does." in capsys.readouterr().out


def test_a_fixed_mismatch_becomes_a_regression_test(tmp_path: Path) -> None:
    file = download(shadowed_app(), tmp_path)
    with pytest.raises(AssertionError, match=r'body \$\.title\n    legacy: "Tea"'):
        replay_mismatch(shadowed_app(), file)
    assert replay_mismatch(shadowed_app(fixed=True), file).matches


def test_replay_runs_as_pasted_from_the_docs(tmp_path: Path) -> None:
    file = download(shadowed_app(), tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "replay", str(file), f"{APPS}:application"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "1 difference:" in done.stdout and done.stderr == ""


def test_a_report_without_bodies_still_replays_its_request(tmp_path: Path) -> None:
    file = download(shadowed_app(show_bodies=False), tmp_path)
    report = load_report(file)
    assert report["legacy"]["body"] is None
    with pytest.raises(AssertionError, match="1 difference"):
        replay_mismatch(shadowed_app(), file)


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        (None, 'The file "{file}" could not be read'),
        ("{not json", 'The file "{file}" is not JSON; download a mismatch'),
        ('{"x": 1}', 'The file "{file}" is not a shadow mismatch report'),
        ('{"bridge": "shadow mismatch", "version": 9}', 'The report "{file}" has format version 9'),
    ],
)
def test_a_bad_file_is_a_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, sentence: str
) -> None:
    file = tmp_path / "report.json"
    if content is not None:
        file.write_text(content)
    assert main(["replay", str(file), f"{APPS}:application"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bridge: error: " + sentence.format(file=file)) and "Traceback" not in err


def test_a_report_whose_route_is_gone_says_so(tmp_path: Path) -> None:
    file = download(shadowed_app(), tmp_path)
    report = json.loads(file.read_text())
    report["request"]["path"] = "/gone/1"
    file.write_text(json.dumps(report))
    with pytest.raises(ReplayError, match=r"No route of the app matches GET /gone/1"):
        replay_mismatch(shadowed_app(), file)


def test_noise_learned_where_the_report_was_kept_is_left_out_of_the_replay(tmp_path: Path) -> None:
    file = download(shadowed_app(), tmp_path)
    report = json.loads(file.read_text())
    assert report["noise"] == []
    report["noise"] = ["body $.title"]  # as if the server had learned the title varies
    file.write_text(json.dumps(report))
    assert replay_mismatch(shadowed_app(), file).matches
