"""The shared conformance suite against a real redis-server, with the restart and drop hooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anyqueue_conformance import ConformanceSuite
from anyqueue_redis.testing import RedisHarness, RedisServer


class TestRedisConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHarness]:
        # a server of its own: the durable-restart case restarts it under the other cases' feet
        with RedisServer(tmp_path_factory.mktemp("redis-conformance")) as server:
            yield RedisHarness(server.url, server=server)
