"""Fixtures for the sqs:// tests: one moto SQS+SNS server per session, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyqueue_sqs.testing import MotoSQS


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto server (SQS and SNS) started for this test session."""
    with MotoSQS() as server:
        yield server.endpoint
