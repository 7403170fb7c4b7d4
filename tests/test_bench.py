"""The benchmark runner: small counts, checks that figures are produced and shown (no timing)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import uuid
from collections.abc import Iterator

import pytest

import anyqueue
from anyqueue import bench
from anyqueue.plugins import registry


@pytest.fixture
def url() -> str:
    return f"memory://bench-{uuid.uuid4().hex[:8]}"


def test_run_measures_every_figure(url: str) -> None:
    phases: list[str] = []
    result = bench.run(
        url, messages=250, body_size=64, requests=10, progress=lambda p, n: phases.append(p)
    )
    assert result.error is None
    assert result.backend == "memory"
    assert set(result.figures) == set(bench.FIGURES)
    assert all(value > 0 for value in result.figures.values())
    assert result.figures["request_p99_ms"] >= result.figures["request_p50_ms"]
    assert result.combined_per_s is not None
    assert result.combined_per_s < min(
        result.figures["publish_per_s"], result.figures["consume_per_s"]
    )
    assert result.baseline is None  # memory:// ships no baseline
    assert {"publish", "consume+ack", "request/reply"} <= set(phases)


def test_run_consumes_everything_it_published(url: str) -> None:
    bench.run(url, messages=120, requests=0)
    # the bench topic is drained: a new member of its group finds nothing left
    with anyqueue.connect(url) as broker:
        space = broker._driver._space  # type: ignore[attr-defined]
        bench_queues = [q for (topic, _), q in space.queues.items() if "bench" in topic]
        assert bench_queues
        assert all(not q.ready and not q.leased for q in bench_queues)


def test_table_shows_the_figures(url: str) -> None:
    result = bench.run(url, messages=200, requests=5)
    table = bench.format_table([result])
    header, _, row, *_ = table.splitlines()
    assert "publish/s" in header and "req p99 ms" in header
    assert row.startswith(url)
    assert "anyqueue" in row
    assert "-" not in row.split("anyqueue")[1]  # every column has a figure
    assert "200 messages of 100 bytes in batches of 100" in table


def test_batch_sets_publish_calls_and_prefetch(
    url: str, monkeypatch: pytest.MonkeyPatch, memory_with_baseline: list[dict[str, int]]
) -> None:
    published: list[int] = []
    prefetches: list[int] = []
    real_publish_batch, real_subscribe = anyqueue.Broker.publish_batch, anyqueue.Broker.subscribe

    def publish_batch(self: anyqueue.Broker, topic: str, messages: list[bytes]) -> list[str]:
        published.append(len(messages))
        return real_publish_batch(self, topic, messages)

    def subscribe(self: anyqueue.Broker, *args: object, **options: object) -> object:
        prefetches.append(options["prefetch"])  # type: ignore[arg-type]
        return real_subscribe(self, *args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(anyqueue.Broker, "publish_batch", publish_batch)
    monkeypatch.setattr(anyqueue.Broker, "subscribe", subscribe)
    result = bench.run(url, messages=250, requests=0, batch=60)
    assert published == [60, 60, 60, 60, 10]
    assert prefetches == [60]
    assert memory_with_baseline[0]["batch"] == 60
    assert result.to_dict()["batch"] == 60
    with pytest.raises(anyqueue.ConfigError, match="batch"):
        bench.run(url, messages=10, batch=0)


def test_json_output(url: str) -> None:
    result = bench.run(url, messages=100, requests=3)
    [record] = json.loads(bench.format_json([result]))
    assert record["url"] == url
    assert set(record["anyqueue"]) == {*bench.FIGURES, "combined_per_s"}
    assert record["baseline"] is None
    assert record["error"] is None


def test_zero_counts_skip_those_measurements(url: str) -> None:
    result = bench.run(url, messages=0, requests=4)
    assert set(result.figures) == {"request_p50_ms", "request_p99_ms"}
    assert result.combined_per_s is None


def test_bad_arguments_are_config_errors(url: str) -> None:
    with pytest.raises(anyqueue.ConfigError):
        bench.run(url, messages=-1)


def test_an_unreachable_backend_is_a_failed_row_not_an_exception() -> None:
    result = bench.run("nosuch://bob:hunter2-secret@x", messages=10, requests=1)
    assert result.error is not None and "BackendNotFound" in result.error
    table = bench.format_table([result])
    assert "failed" in table
    assert "hunter2-secret" not in table


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert bench.percentile(samples, 50) == 50.0
    assert bench.percentile(samples, 99) == 99.0
    assert bench.percentile([7.0], 99) == 7.0


# -- baselines ---------------------------------------------------------------------------------
@pytest.fixture
def memory_with_baseline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, int]]]:
    """memory:// with a plugin-style baseline: a plain deque, the "raw client" of memory.

    Yields the keyword arguments each baseline call received."""
    import collections
    import time

    calls: list[dict[str, int]] = []

    def baseline(
        url: str, *, messages: int, body_size: int, requests: int, batch: int
    ) -> dict[str, float]:
        calls.append(
            {"messages": messages, "body_size": body_size, "requests": requests, "batch": batch}
        )
        queue: collections.deque[bytes] = collections.deque()
        body = b"x" * body_size
        start = time.perf_counter()
        for _ in range(messages):
            queue.append(body)
        published = time.perf_counter()
        while queue:
            queue.popleft()
        done = time.perf_counter()
        return {
            "publish_per_s": messages / max(published - start, 1e-9),
            "consume_per_s": messages / max(done - published, 1e-9),
        }

    module = types.ModuleType("anyqueue_test_baseline")
    module.baseline = baseline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "anyqueue_test_baseline", module)
    spec = dataclasses.replace(
        registry.for_scheme("memory"), baseline="anyqueue_test_baseline:baseline"
    )
    real_for_scheme = registry.for_scheme
    monkeypatch.setattr(
        registry,
        "for_scheme",
        lambda scheme: spec if scheme == "memory" else real_for_scheme(scheme),
    )
    yield calls


def test_baseline_runs_and_ratios_are_shown(url: str, memory_with_baseline: list) -> None:
    result = bench.run(url, messages=150, body_size=10, requests=3)
    assert memory_with_baseline == [
        {"messages": 150, "body_size": 10, "requests": 3, "batch": bench.BATCH}
    ]
    assert result.baseline is not None
    assert set(result.ratios()) == {"publish_per_s", "consume_per_s", "combined_per_s"}
    lines = bench.format_table([result]).splitlines()
    assert any(line.split()[:1] == ["baseline"] for line in lines)
    ratio_row = next(line for line in lines if line.split()[:1] == ["ratio"])
    assert ratio_row.count("x") == 3  # three throughput ratios, latencies have no baseline
    assert "ratio = anyqueue / baseline" in "\n".join(lines)


def test_no_baseline_skips_it(url: str, memory_with_baseline: list) -> None:
    result = bench.run(url, messages=50, requests=1, baseline=False)
    assert memory_with_baseline == []
    assert result.baseline is None


def test_a_failing_baseline_is_a_note(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str, **sizes: int) -> dict[str, float]:
        raise RuntimeError("raw client exploded")

    module = types.ModuleType("anyqueue_test_broken_baseline")
    module.baseline = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "anyqueue_test_broken_baseline", module)
    spec = dataclasses.replace(
        registry.for_scheme("memory"), baseline="anyqueue_test_broken_baseline:baseline"
    )
    monkeypatch.setattr(registry, "for_scheme", lambda scheme: spec)
    result = bench.run(url, messages=50, requests=1)
    assert result.error is None
    assert result.baseline_error == "RuntimeError: raw client exploded"
    assert "baseline failed: RuntimeError: raw client exploded" in bench.format_table([result])


def test_ratio_is_anyqueue_over_baseline() -> None:
    result = bench.BenchResult(
        url="x://",
        backend="x",
        messages=1,
        body_size=1,
        requests=1,
        figures={"publish_per_s": 200.0, "consume_per_s": 100.0, "request_p50_ms": 2.0},
        baseline={"publish_per_s": 400.0, "consume_per_s": 100.0, "request_p50_ms": 1.0},
    )
    ratios = result.ratios()
    assert ratios["publish_per_s"] == 0.5
    assert ratios["consume_per_s"] == 1.0
    assert ratios["request_p50_ms"] == 2.0
    assert ratios["combined_per_s"] == pytest.approx((1 / (1 / 200 + 1 / 100)) / 80)
