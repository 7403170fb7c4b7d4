"""One throwaway RabbitMQ node per test session, on free loopback ports in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyqueue_rabbitmq.testing import RabbitNode, scripts_dir


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    if scripts_dir() is None:
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    with RabbitNode(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node
