"""The raw confluent-kafka baseline behind `anyqueue bench kafka://...` runs and reports."""

from __future__ import annotations

from anyqueue.bench import FIGURES
from anyqueue_kafka.bench import baseline
from anyqueue_kafka.testing import TansuServer


def test_baseline_measures_every_figure(tansu: TansuServer) -> None:
    figures = baseline(tansu.url(), messages=300, body_size=50, requests=5)
    assert set(figures) == set(FIGURES)
    assert all(value > 0 for value in figures.values()), figures
    assert figures["request_p99_ms"] >= figures["request_p50_ms"]
