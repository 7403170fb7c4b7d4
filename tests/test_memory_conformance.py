"""memory:// runs the whole conformance suite (it is the reference backend)."""

from __future__ import annotations

import pytest

from anyqueue_conformance import ConformanceSuite, Harness


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls) -> Harness:
        # in-process: absence checks ("nothing more arrives") need only short waits
        return Harness("memory://conformance", time_scale=0.3)
