"""Fixtures for the Kafka backend's tests: one Tansu broker per test session, on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anyqueue_kafka.testing import TansuServer


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuServer]:
    """A Kafka-protocol broker (Tansu, memory storage) behind a cuttable proxy."""
    with TansuServer() as server:
        yield server
