"""`anyqueue bench`: publish, consume+ack and request/reply figures per URL, in one process.

For each URL it measures, on a fresh topic named `anyqueue-bench-<run id>`:

- publish: `publish_batch` in batches of `batch` (100) to a durable group declared first,
  until the broker accepted every message;
- consume+ack: one subscription (`prefetch=batch`) receives every message with `receive_batch`
  and acks each batch with one `ack(batch)` call (as the raw-client baselines receive and
  settle in batches), from the first delivery to the last ack flushed (so a consumer-group
  join is not counted as throughput);
- request/reply: `serve` and `request` in this process, sequential requests after one warm-up,
  reported as p50 / p99 latency;

then, if the backend plugin ships one (`BackendSpec.baseline`), the same figures measured with
the broker's own client library, so the table shows what anyqueue costs (ratio anyqueue/baseline).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .broker import Broker, connect
from .config import BrokerURL, scrub
from .errors import ConfigError, Error, Timeout
from .plugins import import_string, registry

#: messages per publish_batch call and the subscription's prefetch, unless told otherwise
BATCH = 100

#: the figures a run produces (anyqueue side and baseline share these keys)
FIGURES = ("publish_per_s", "consume_per_s", "request_p50_ms", "request_p99_ms")

#: higher is better for these; lower is better for the latencies
THROUGHPUTS = ("publish_per_s", "consume_per_s", "combined_per_s")

#: called as the run advances: (phase name, units of work just done)
Progress = Callable[[str, int], None]


def _no_progress(phase: str, done: int) -> None:
    pass


@dataclass
class BenchResult:
    """The figures of one URL: anyqueue's, and the raw client's baseline if there is one."""

    url: str  # redacted
    backend: str
    messages: int
    body_size: int
    requests: int
    batch: int = BATCH
    figures: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] | None = None
    baseline_error: str | None = None
    error: str | None = None

    @property
    def combined_per_s(self) -> float | None:
        """Messages per second through publish, receive and ack: 1 / (1/publish + 1/consume)."""
        return combined_rate(self.figures)

    def ratios(self) -> dict[str, float]:
        """anyqueue ÷ baseline for every figure both sides measured."""
        if not self.baseline:
            return {}
        ours = with_combined(self.figures)
        theirs = with_combined(self.baseline)
        return {
            name: ours[name] / theirs[name]
            for name in (*THROUGHPUTS, "request_p50_ms", "request_p99_ms")
            if name in ours and theirs.get(name)
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what `anyqueue bench --format json` prints)."""
        return {
            "url": self.url,
            "backend": self.backend,
            "messages": self.messages,
            "body_size": self.body_size,
            "requests": self.requests,
            "batch": self.batch,
            "anyqueue": with_combined(self.figures),
            "baseline": with_combined(self.baseline) if self.baseline is not None else None,
            "ratio": self.ratios() or None,
            "baseline_error": self.baseline_error,
            "error": self.error,
        }


def combined_rate(figures: dict[str, float]) -> float | None:
    """1 / (1/publish + 1/consume): the rate of a message through the whole pipeline."""
    publish, consume = figures.get("publish_per_s"), figures.get("consume_per_s")
    if not publish or not consume:
        return None
    return 1.0 / (1.0 / publish + 1.0 / consume)


def with_combined(figures: dict[str, float]) -> dict[str, float]:
    """`figures` plus `combined_per_s` when both rates are there."""
    combined = combined_rate(figures)
    return {**figures, "combined_per_s": combined} if combined is not None else dict(figures)


def percentile(samples: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of `samples` (not empty)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def measure(
    broker: Broker,
    *,
    messages: int,
    body_size: int,
    requests: int,
    batch: int = BATCH,
    progress: Progress = _no_progress,
    idle_timeout: float = 30.0,
) -> dict[str, float]:
    """Run the anyqueue side of the benchmark on `broker`; return the figures it measured."""
    run_id = uuid.uuid4().hex[:12]
    topic = f"anyqueue-bench-{run_id}"
    body = os.urandom(body_size)
    figures: dict[str, float] = {}
    if messages > 0:
        broker.declare(topic, "bench")
        figures["publish_per_s"] = _publish(broker, topic, body, messages, batch, progress)
        figures["consume_per_s"] = _consume(broker, topic, messages, batch, progress, idle_timeout)
    if requests > 0:
        latencies = _request_reply(broker, f"{topic}-rpc", body, requests, progress)
        figures["request_p50_ms"] = percentile(latencies, 50) * 1000
        figures["request_p99_ms"] = percentile(latencies, 99) * 1000
    return figures


def _publish(
    broker: Broker, topic: str, body: bytes, messages: int, batch: int, progress: Progress
) -> float:
    sent = 0
    start = time.perf_counter()
    while sent < messages:
        count = min(batch, messages - sent)
        broker.publish_batch(topic, [body] * count)
        sent += count
        progress("publish", count)
    return messages / (time.perf_counter() - start)


def _consume(
    broker: Broker,
    topic: str,
    messages: int,
    batch: int,
    progress: Progress,
    idle_timeout: float,
) -> float:
    received = 0
    first_at = 0.0
    with broker.subscribe(topic, "bench", prefetch=batch) as subscription:
        while received < messages:
            arrived = subscription.receive_batch(timeout=idle_timeout)
            if not arrived:
                raise Timeout(
                    f"only {received} of {messages} published messages came back "
                    f"(nothing for {idle_timeout:g}s)"
                )
            if received == 0:
                first_at = time.perf_counter()
            subscription.ack(arrived)
            received += len(arrived)
            progress("consume+ack", len(arrived))
    # closing flushed any batched acks: they count
    elapsed = time.perf_counter() - first_at
    # intervals between the first delivery and the last ack: one message fewer than received
    return max(1, messages - 1) / elapsed if elapsed > 0 else math.inf


def _request_reply(
    broker: Broker, topic: str, body: bytes, requests: int, progress: Progress
) -> list[float]:
    latencies: list[float] = []
    with broker.serve(topic, lambda request: request.body):
        broker.request(topic, body, timeout=30)  # warm-up: opens the reply inbox
        for _ in range(requests):
            start = time.perf_counter()
            broker.request(topic, body, timeout=30)
            latencies.append(time.perf_counter() - start)
            progress("request/reply", 1)
    return latencies


def run(
    url: str,
    *,
    messages: int = 10_000,
    body_size: int = 100,
    requests: int = 200,
    batch: int = BATCH,
    baseline: bool = True,
    progress: Progress = _no_progress,
    idle_timeout: float = 30.0,
) -> BenchResult:
    """Benchmark one URL (and its backend's baseline unless `baseline=False`).

    `batch` is the messages per `publish_batch` call and the subscription's prefetch; it is
    passed on to the baseline, which uses it wherever its client has such a batch.

    A failure is recorded in the result (`error`, `baseline_error`), not raised, so a table of
    several URLs still shows the others; bad arguments raise ConfigError.
    """
    for name, value in (("messages", messages), ("requests", requests)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}")
    if not isinstance(body_size, int) or body_size < 0:
        raise ConfigError(f"body_size must be a whole number >= 0, not {body_size!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a whole number >= 1, not {batch!r}")
    parsed = BrokerURL.parse(url)
    secrets = parsed.secrets()
    result = BenchResult(
        url=parsed.redacted(),
        backend=parsed.scheme,
        messages=messages,
        body_size=body_size,
        requests=requests,
        batch=batch,
    )
    try:
        spec = registry.for_scheme(parsed.scheme)
        result.backend = spec.name
        with connect(url) as broker:
            result.figures = measure(
                broker,
                messages=messages,
                body_size=body_size,
                requests=requests,
                batch=batch,
                progress=progress,
                idle_timeout=idle_timeout,
            )
    except Error as err:
        result.error = scrub(f"{type(err).__name__}: {err}", secrets)
        return result
    if baseline and spec.baseline:
        progress("baseline", 0)
        try:
            measure_baseline = import_string(spec.baseline)
            figures = measure_baseline(
                url, messages=messages, body_size=body_size, requests=requests, batch=batch
            )
            result.baseline = {k: float(v) for k, v in figures.items() if k in FIGURES}
        except Exception as err:  # a baseline is an extra: report its failure, keep the run
            result.baseline_error = scrub(f"{type(err).__name__}: {err}", secrets)
    return result


# -- output -------------------------------------------------------------------------------------
COLUMNS = (
    ("publish_per_s", "publish/s"),
    ("consume_per_s", "consume+ack/s"),
    ("combined_per_s", "pub+recv+ack/s"),
    ("request_p50_ms", "req p50 ms"),
    ("request_p99_ms", "req p99 ms"),
)


def format_figure(name: str, value: float | None) -> str:
    """One figure as the tables show it: rates as whole numbers, latencies in ms, None as -."""
    if value is None:
        return "-"
    if name.endswith("_ms"):
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    return f"{value:,.0f}"


def format_table(results: Sequence[BenchResult]) -> str:
    """The figures as an aligned text table: per URL an anyqueue row, and a baseline and a
    ratio row when the backend has a baseline."""
    header = ["url", "", *(title for _, title in COLUMNS)]
    rows: list[list[str]] = []
    notes: list[str] = []
    for result in results:
        if result.error:
            rows.append([result.url, "failed", *("-" for _ in COLUMNS)])
            notes.append(f"{result.url}: {result.error}")
            continue
        ours = with_combined(result.figures)
        rows.append([result.url, "anyqueue", *(format_figure(k, ours.get(k)) for k, _ in COLUMNS)])
        if result.baseline is not None:
            theirs = with_combined(result.baseline)
            ratios = result.ratios()
            rows.append(["", "baseline", *(format_figure(k, theirs.get(k)) for k, _ in COLUMNS)])
            rows.append(
                ["", "ratio", *(f"{ratios[k]:.2f}x" if k in ratios else "-" for k, _ in COLUMNS)]
            )
        if result.baseline_error:
            notes.append(f"{result.url}: baseline failed: {result.baseline_error}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        left = [cells[i].ljust(widths[i]) for i in range(2)]
        right = [cells[i].rjust(widths[i]) for i in range(2, len(cells))]
        return "  ".join(left + right).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    if results:
        first = results[0]
        out.append("")
        out.append(
            f"{first.messages:,} messages of {first.body_size:,} bytes in batches of "
            f"{first.batch:,}, {first.requests:,} sequential requests per URL"
        )
        if any(result.baseline is not None for result in results):
            out.append(
                "ratio = anyqueue / baseline (throughput: higher is better, "
                "latency: lower is better)"
            )
    out.extend(f"note: {note}" for note in notes)
    return "\n".join(out)


def format_json(results: Sequence[BenchResult]) -> str:
    """The results as a JSON document (a list, one object per URL)."""
    return json.dumps([result.to_dict() for result in results], indent=2)
