# ruff: noqa: SIM115  (each file opened here is handed to bridge, which closes it)
"""``wsgi.file_wrapper`` and pathsend: the server sends a file by path only when that is safe.

Each case is what an app under gunicorn does and expects; where the server offers
``http.response.pathsend`` (granian), bridge must still send the same bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge import Bridge
from bridge.wsgi.filewrapper import FileWrapper
from tests.asgi import Client, http_scope

Environ = dict[str, Any]
PATHSEND = {"http.response.pathsend": {}}
DATA = b"name,count\n" + b"widget,3\n" * 2000


def serve(make_file: Callable[[], Any], status: str = "200 OK") -> Client:
    """Serve whatever ``make_file()`` opens through ``wsgi.file_wrapper``, pathsend offered.

    Not inside ``wsgiref.validate``: it wraps the returned file wrapper in an iterator
    of its own, and so would hide the case tested.
    """

    def app(environ: Environ, start_response: Any) -> Any:
        body = status[:3] not in ("204", "304")
        start_response(status, [("Content-Type", "text/csv")] if body else [])
        return environ["wsgi.file_wrapper"](make_file())

    client = Client()
    asyncio.run(client.run(Bridge(app), http_scope(extensions=PATHSEND)))
    return client


def kinds(client: Client) -> list[str]:
    return [message["type"] for message in client.sent]


def test_a_plain_file_goes_by_path(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)
    client = serve(lambda: open(path, "rb"))
    assert kinds(client) == ["http.response.start", "http.response.pathsend"]
    assert client.sent[1]["path"] == str(path)
    assert client.headers[b"content-length"] == str(len(DATA)).encode()


def test_a_gzip_file_streams_its_decompressed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(DATA))
    client = serve(lambda: gzip.open(path, "rb"))
    assert "http.response.pathsend" not in kinds(client)
    assert client.body == DATA


def test_a_temporary_file_deleted_on_close_streams() -> None:
    """Django's FileResponse over a NamedTemporaryFile: close() removes the path."""

    def make() -> Any:
        handle = tempfile.NamedTemporaryFile()
        handle.write(DATA)
        handle.seek(0)
        return handle

    client = serve(make)
    assert "http.response.pathsend" not in kinds(client)
    assert client.body == DATA


def test_a_file_replaced_since_it_was_opened_streams_what_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)

    def make() -> Any:
        handle = open(path, "rb")
        newer = tmp_path / "newer.csv"
        newer.write_bytes(b"another file\n")
        os.replace(newer, path)  # the name now points at another inode
        return handle

    client = serve(make)
    assert "http.response.pathsend" not in kinds(client)
    assert client.body == DATA


def test_a_tar_member_without_fileno_streams(tmp_path: Path) -> None:
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("x.csv")
        info.size = len(DATA)
        tar.addfile(info, io.BytesIO(DATA))
    tar = tarfile.open(archive)

    def make() -> Any:
        member = tar.extractfile("x.csv")
        assert member is not None
        return member

    try:
        client = serve(make)
    finally:
        tar.close()
    assert client.status == 200
    assert client.body == DATA


@pytest.mark.parametrize(
    "error", [AttributeError("no fileno"), io.UnsupportedOperation("fileno"), OSError("gone")]
)
def test_any_error_from_fileno_means_streaming(tmp_path: Path, error: Exception) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)
    handle = open(path, "rb")

    class Broken(io.BufferedReader):
        def fileno(self) -> int:
            raise error

    broken = Broken(handle.raw)
    try:
        assert FileWrapper(broken).regular_file() is None  # a subclass is not trusted either
    finally:
        broken.close()
    # The exact type with a failing fileno(): regular_file() catches the error itself.
    wrapper = FileWrapper(open(path, "rb"))
    wrapper.filelike.close()  # fileno() on a closed file raises ValueError
    assert wrapper.regular_file() is None


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses_get_no_content_length(tmp_path: Path, status: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)
    client = serve(lambda: open(path, "rb"), status=status)
    assert kinds(client)[0] == "http.response.start"
    assert "http.response.pathsend" not in kinds(client)
    assert b"content-length" not in client.headers
    assert client.body == b""


def test_a_file_read_past_its_start_streams_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)

    def make() -> Any:
        handle = open(path, "rb")
        handle.read(11)
        return handle

    client = serve(make)
    assert "http.response.pathsend" not in kinds(client)
    assert client.body == DATA[11:]


def test_pathsend_target_refuses_a_length_that_disagrees(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(DATA)
    with open(path, "rb") as handle:
        wrapper = FileWrapper(handle)
        assert wrapper.pathsend_target(200, None) == (str(path), len(DATA))
        assert wrapper.pathsend_target(200, len(DATA)) == (str(path), len(DATA))
        assert wrapper.pathsend_target(200, 5) is None
        assert wrapper.pathsend_target(204, None) is None
        assert wrapper.pathsend_target(304, None) is None
