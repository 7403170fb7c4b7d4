"""The shared conformance suite against a real rabbitmq-server, classic and quorum groups."""

from __future__ import annotations

import pytest

from anyqueue_conformance import ConformanceSuite, Harness
from anyqueue_rabbitmq.testing import RabbitHarness, RabbitNode


class TestRabbitConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, rabbitmq_node: RabbitNode) -> Harness:
        return RabbitHarness(rabbitmq_node.url, node=rabbitmq_node)


class TestRabbitQuorumConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, rabbitmq_node: RabbitNode) -> Harness:
        return RabbitHarness(rabbitmq_node.url + "?queue_type=quorum", node=rabbitmq_node)
