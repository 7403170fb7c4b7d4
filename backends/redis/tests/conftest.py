"""Fixtures for the Redis backend's tests: real redis-server processes on free loopback ports.

The tests use the session server of the root conftest.py, and start their own servers
(AOF with `appendfsync always`, so the backend claims
`durable`) in temporary directories and stop them afterwards. Set ANYQUEUE_REDIS_SERVER to use
another redis-server binary.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyqueue_redis.testing import RedisServer

# `redis_server`, the session's shared server, comes from the repository's root conftest.py


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
