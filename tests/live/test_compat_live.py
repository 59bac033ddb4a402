"""Compatibility on real servers: pathsend under granian, nested bridges, lifespan state, trio."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.servers import ROOT, free_port

from .conftest import ROOT_PATH, LiveServer, run_server

pytestmark = pytest.mark.live

APP = "tests.live.compat_app:application"
DATA = b"name,count\n" + b"widget,3\n" * 20000  # 180 kB: more than one read block


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("files")
    plain = directory / "x.csv"
    plain.write_bytes(DATA)
    packed = directory / "x.csv.gz"
    packed.write_bytes(gzip.compress(DATA))
    archive = directory / "x.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("x.csv")
        info.size = len(DATA)
        tar.addfile(info, io.BytesIO(DATA))
    return {"plain": plain, "gzip": packed, "tempfile": plain, "tar": archive}


@pytest.fixture(scope="module")
def granian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """granian, the server that offers http.response.pathsend, under a root path."""
    with run_server("granian", tmp_path_factory.mktemp("granian"), ROOT_PATH, APP) as server:
        yield server


def get(server: LiveServer, url: str, **params: str) -> httpx.Response:
    return httpx.get(server.url + ROOT_PATH + url, params=params, timeout=15)


def test_granian_sends_a_plain_file_by_path(granian: LiveServer, files: dict[str, Path]) -> None:
    response = get(granian, "/file", kind="plain", path=str(files["plain"]))
    assert response.status_code == 200
    assert response.headers["x-pathsend"] == "yes"
    assert response.headers["content-length"] == str(len(DATA))
    assert response.content == DATA


@pytest.mark.parametrize("kind", ["gzip", "tempfile", "tar"])
def test_granian_gets_the_right_bytes_where_pathsend_would_be_wrong(
    granian: LiveServer, files: dict[str, Path], kind: str
) -> None:
    """gzip: the decompressed bytes; a temporary file: not deleted before it is sent; a
    tar member (fileno() raises AttributeError): streamed, not a 500."""
    response = get(granian, "/file", kind=kind, path=str(files[kind]))
    assert response.status_code == 200, granian.output()
    assert response.headers["x-pathsend"] == "no"
    assert response.content == DATA


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_granian_sends_no_length_for_a_file_on_204_and_304(
    granian: LiveServer, files: dict[str, Path], status: str
) -> None:
    response = get(granian, "/file", kind="plain", path=str(files["plain"]), status=status)
    assert response.status_code == int(status[:3])
    assert "content-length" not in response.headers
    assert response.content == b""


def test_granian_a_bridge_in_a_bridge_sees_the_path_below_its_mount(granian: LiveServer) -> None:
    assert get(granian, "/v2/x").json() == [ROOT_PATH + "/v2", "/x"]
    assert get(granian, "/other").json() == [ROOT_PATH, "/other"]


def test_granian_a_mounted_starlette_app_reads_its_lifespan_state(granian: LiveServer) -> None:
    response = get(granian, "/star/")
    assert (response.status_code, response.text) == (200, "starlette sees pool-live")


def test_granian_refuses_a_websocket_handshake_past_max_header_count_with_431(
    granian: LiveServer,
) -> None:
    """granian offers websocket.http.response, so the client hears 431, not a bare 403."""
    url = granian.url.replace("http://", "ws://") + ROOT_PATH + "/ws"
    with ws_connect(url, open_timeout=10) as socket:  # within the default of 100
        assert int(socket.recv(timeout=10)) < 10
    many = [(f"x-trace-{n}", str(n)) for n in range(150)]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers=many, open_timeout=10)
    assert refused.value.response.status_code == 431


def test_hypercorn_trio_worker_is_refused_at_startup(tmp_path: Path) -> None:
    pytest.importorskip("trio")
    log = tmp_path / "hypercorn.log"
    address = f"127.0.0.1:{free_port()}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", address, APP],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(30)  # it stops (hypercorn exits with status 0 after a failed startup)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    assert "bridge runs on asyncio only" in text
    assert "--worker-class asyncio" in text
