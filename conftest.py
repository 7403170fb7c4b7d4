"""Session-wide real brokers for every test directory, each started once on first use.

Backend suites, the examples and the migration tests share these servers, so a run starts one
RabbitMQ node, one redis-server, one moto server and one Tansu broker at most. Each runs on free
loopback ports in a temp dir and is stopped at the end. Under CI a missing broker is a failure,
not a skip: `scripts/test-all` installs them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest


def require(installed: bool, what: str) -> None:
    """Skip (locally) or fail (under CI) when a broker binary is missing."""
    if installed:
        return
    message = f"{what} is not installed; ./scripts/test-all installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One throwaway RabbitMQ node (see anyqueue_rabbitmq.testing.RabbitNode)."""
    from anyqueue_rabbitmq.testing import RabbitNode, scripts_dir

    require(scripts_dir() is not None, "rabbitmq-server")
    with RabbitNode(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One durable redis-server, AOF with appendfsync always (anyqueue_redis.testing)."""
    from anyqueue_redis.testing import REDIS_SERVER, RedisServer

    require(shutil.which(REDIS_SERVER) is not None, "redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[object]:
    """One moto server in server mode, SQS and SNS (anyqueue_sqs.testing.MotoSQS)."""
    from anyqueue_sqs.testing import MotoSQS

    with MotoSQS() as server:
        yield server


@pytest.fixture(scope="session")
def moto_endpoint(sqs_server: object) -> str:
    """The moto server's HTTP endpoint (for sqs:// URLs with options of a test's own)."""
    return str(sqs_server.endpoint)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def tansu() -> Iterator[object]:
    """A Kafka-protocol broker (Tansu, memory storage) behind a cuttable proxy
    (anyqueue_kafka.testing.TansuServer)."""
    from anyqueue_kafka.testing import TansuServer

    with TansuServer() as server:
        yield server


#: backend name -> the session fixture whose `.url` reaches it
SERVER_FIXTURES = {
    "rabbitmq": "rabbitmq_node",
    "redis": "redis_server",
    "sqs": "sqs_server",
    "kafka": "tansu",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `backend_name` runs once per backend: memory and every real broker."""
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", ["memory", *SERVER_FIXTURES])


@pytest.fixture(scope="session")
def backend_url(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`backend_url("redis")` → the URL of that backend's session server (started on first
    use); `backend_url("memory")` → a fresh memory:// namespace name."""

    def url(name: str) -> str:
        if name == "memory":
            return "memory://shared"
        server = request.getfixturevalue(SERVER_FIXTURES[name])
        address = server.url  # a property, or a method taking options (Tansu)
        return str(address() if callable(address) else address)

    return url
