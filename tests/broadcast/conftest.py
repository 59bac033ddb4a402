"""One real Redis for the session, on a free loopback port, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.broadcast.redis_server import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_session: RedisServer) -> Iterator[RedisServer]:
    if redis_session.process is None:  # a test stopped it and failed before restarting
        redis_session.start()
    redis_session.flush()
    yield redis_session
    if redis_session.process is None:
        redis_session.start()
