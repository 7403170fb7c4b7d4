"""The shared conformance suite against a Tansu broker started by the tests."""

from __future__ import annotations

import pytest

from anyqueue_conformance import ConformanceSuite
from anyqueue_kafka.testing import KafkaHarness, TansuServer


class TestKafkaConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, tansu: TansuServer) -> KafkaHarness:
        return KafkaHarness(tansu.url(), server=tansu)
