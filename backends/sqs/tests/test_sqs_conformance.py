"""The shared conformance suite against moto's SQS and SNS, with standard and FIFO queues.

moto scans a whole queue on every receive, so message counts are scaled down (scale=0.25).
A short visibility timeout (5 s) keeps the dropped-connection case short: a consumer that
vanishes gets its messages back only when their visibility timeout runs out.
"""

from __future__ import annotations

import pytest

from anyqueue_conformance import ConformanceSuite
from anyqueue_sqs.testing import SQSHarness, sqs_url

SCALE = 0.25
VISIBILITY_SECONDS = 5


class TestSQSConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, moto_endpoint: str) -> SQSHarness:
        url = sqs_url(moto_endpoint, prefix="cs", visibility_timeout=VISIBILITY_SECONDS)
        return SQSHarness(url, scale=SCALE)


class TestSQSFifoConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, moto_endpoint: str) -> SQSHarness:
        url = sqs_url(moto_endpoint, prefix="cf", fifo=True, visibility_timeout=VISIBILITY_SECONDS)
        return SQSHarness(url, scale=SCALE)
