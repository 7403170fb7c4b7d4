"""The suite must be able to fail: run it on deliberately broken memory:// variants and check
the matrix names the broken capability, while the honest backend stays green."""

from __future__ import annotations

import json
import textwrap

import pytest

pytest_plugins = ["pytester"]

BROKEN_BACKENDS = textwrap.dedent(
    """
    import uuid
    import pytest
    import anyqueue
    from anyqueue.config import BrokerURL
    from anyqueue.memory.driver import MemoryDriver, MemoryOptions, MemorySubscription
    from anyqueue.plugins import registry
    from anyqueue_conformance import ConformanceSuite, Harness


    class LosesEveryTenth(MemoryDriver):
        count = 0

        def publish(self, topic, messages):
            kept = []
            for message in messages:
                LosesEveryTenth.count += 1
                if LosesEveryTenth.count % 10:
                    kept.append(message)
            super().publish(topic, kept)


    class ForgetsDeliveryCount(MemorySubscription):
        def receive(self, max_messages, timeout):
            batch = super().receive(max_messages, timeout)
            for message in batch:
                message.delivery_count, message.redelivered = 1, False
            return batch


    class CountsNothing(MemoryDriver):
        def subscribe(self, topic, group, *, prefetch, ack_timeout):
            inner = super().subscribe(topic, group, prefetch=prefetch, ack_timeout=ack_timeout)
            inner.__class__ = ForgetsDeliveryCount
            return inner


    class BrokenHarness(Harness):
        driver = MemoryDriver

        def connect(self, **options):
            url = BrokerURL.parse(self.url)
            spec = registry.for_scheme("memory")
            return anyqueue.Broker(spec, self.driver(url, MemoryOptions()), url, [])


    def harness_with(driver):
        class Configured(BrokenHarness):
            pass
        Configured.driver = driver
        return Configured(f"memory://{driver.__name__}-{uuid.uuid4().hex[:6]}", time_scale=0.3)


    class TestLosing(ConformanceSuite):
        @pytest.fixture(scope="class")
        @classmethod
        def harness(cls):
            return harness_with(LosesEveryTenth)


    class TestCounting(ConformanceSuite):
        @pytest.fixture(scope="class")
        @classmethod
        def harness(cls):
            return harness_with(CountsNothing)
    """
)


def test_matrix_reports_the_broken_capabilities(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN_BACKENDS)
    report = pytester.path / "matrix.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--anyqueue-report={report}",
        "-k",
        "round_trip or total_queue or delivery_count or nack_requeues or two_groups",
    )
    assert result.ret == 1
    matrix = json.loads(report.read_text())["matrix"]
    losing = next(cells for url, cells in matrix.items() if "LosesEveryTenth" in url)
    counting = next(cells for url, cells in matrix.items() if "CountsNothing" in url)
    assert losing["round_trip"] == "FAIL" and losing["total_queue"] == "FAIL"
    assert losing["fan_out"] == "FAIL"
    assert counting["delivery_count"] == "FAIL" and counting["nack"] == "FAIL"
    assert counting["round_trip"] == "VERIFIED"
    result.stdout.fnmatch_lines(["*anyqueue conformance matrix*"])
