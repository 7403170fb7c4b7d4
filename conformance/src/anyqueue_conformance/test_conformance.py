"""Collected by `pytest --pyargs anyqueue_conformance --anyqueue-url URL`: the suite per URL."""

from __future__ import annotations

import pytest

from anyqueue_conformance import ConformanceSuite, Harness, harness_for


class TestConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, anyqueue_url: str, request: pytest.FixtureRequest) -> Harness:
        return harness_for(
            anyqueue_url,
            scale=request.config.getoption("anyqueue_scale"),
            time_scale=request.config.getoption("anyqueue_time_scale"),
        )
