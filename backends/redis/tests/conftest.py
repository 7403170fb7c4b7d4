"""Fixtures for the Redis backend's tests: real redis-server processes on free loopback ports.

The tests start their own servers (AOF with `appendfsync always`, so the backend claims
`durable`) in temporary directories and stop them afterwards. Set ANYQUEUE_REDIS_SERVER to use
another redis-server binary.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyqueue_redis.testing import REDIS_SERVER, RedisServer

if shutil.which(REDIS_SERVER) is None:
    pytest.skip(
        f"{REDIS_SERVER} is not installed (apt-get install redis-server)", allow_module_level=True
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One durable server for the session (tests keep apart by using unique prefixes)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(redis_server: RedisServer, prefix: str) -> str:
    """The session server's URL with this test's prefix."""
    return f"{redis_server.url}?prefix={prefix}"


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own (for tests that restart or reconfigure it)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
