"""The raw confluent-kafka baseline that `anyqueue bench kafka://...` compares anyqueue with.

Plain confluent-kafka done the fast way, with the client settings the URL gives anyqueue
(bootstrap servers, security, fetch wait, linger, idempotent producer with acks=all):

- publish: after one untimed warm-up record to a topic of its own, produce every message
  asynchronously (one shared delivery callback counting failures), then one flush;
- consume+ack: a new consumer group reads the topic from the start with consume(500) and
  commits each batch asynchronously (one synchronous commit at the end), timed from the first
  message to that last commit, as anyqueue's side is;
- request/reply: a server (consumer group on the request topic) produces each reply to the
  caller's reply topic, read by an assigned consumer; neither side waits for delivery reports
  (the reply itself proves delivery). Sequential requests after one warm-up.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from anyqueue.bench import percentile
from anyqueue.config import BrokerURL, parse_options

from .admin import Cluster
from .driver import FETCH_QUEUE_BACKOFF_MS, KafkaDriver, KafkaOptions, librdkafka_settings

#: how long any step may wait for the broker before the baseline gives up
PATIENCE = 60.0


def baseline(
    url: str, *, messages: int, body_size: int, requests: int, batch: int = 100
) -> dict[str, float]:
    """Measure publish/s, consume+ack/s and request/reply latency with plain confluent-kafka.

    `batch` is not used: the baseline always produces everything before its one flush and
    consumes 500 records at a time. anyqueue's side waits for delivery once per `batch`, so
    `anyqueue bench --batch N` with N = the message count compares like with like."""
    parsed = BrokerURL.parse(url)
    options: KafkaOptions = parse_options(KafkaOptions, parsed.query, {})
    common = {
        **KafkaDriver._client_config(parsed, options),
        **librdkafka_settings(options.librdkafka),
    }
    producer_config = {
        **common,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": options.linger * 1000,
        "sticky.partitioning.linger.ms": 0,
    }
    consumer_config = {
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,  # as anyqueue's subscriptions
        **common,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(options.session_timeout * 1000),
        "fetch.wait.max.ms": int(options.fetch_wait * 1000),
    }
    cluster = Cluster(common, timeout=options.timeout)
    run_id = uuid.uuid4().hex[:12]
    body = os.urandom(body_size)
    figures: dict[str, float] = {}
    if messages > 0:
        topic = f"anyqueue-baseline-{run_id}"
        warm_up_topic = f"{topic}-warm-up"
        for name in (topic, warm_up_topic):
            cluster.ensure_topic(name, options.partitions, options.replication_factor)
        figures["publish_per_s"] = _publish(producer_config, topic, warm_up_topic, body, messages)
        figures["consume_per_s"] = _consume(consumer_config, topic, messages)
    if requests > 0:
        latencies = _request_reply(
            producer_config, consumer_config, cluster, options, run_id, body, requests
        )
        figures["request_p50_ms"] = percentile(latencies, 50) * 1000
        figures["request_p99_ms"] = percentile(latencies, 99) * 1000
    return figures


def _publish(
    config: dict[str, Any], topic: str, warm_up_topic: str, body: bytes, messages: int
) -> float:
    producer = Producer(config)
    failures: list[Any] = []

    def delivered(error: Any, _record: Any) -> None:
        if error is not None:
            failures.append(error)

    # warm-up, untimed: the idempotent producer's id and the topic's metadata, which
    # anyqueue's connection already holds when its publishing is timed. The record goes to a
    # topic of its own: in the measured one, a lone first record would start the consumer's
    # clock a whole fetch round early (measured on Tansu: 4x fewer records/s for 50,000)
    producer.produce(warm_up_topic, body, on_delivery=delivered)
    if producer.flush(PATIENCE):
        raise TimeoutError("the baseline producer could not connect")
    producer.list_topics(topic, timeout=PATIENCE)
    start = time.perf_counter()
    for _ in range(messages):
        while True:
            try:
                producer.produce(topic, body, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(PATIENCE):
        raise TimeoutError("the baseline producer could not deliver everything")
    elapsed = time.perf_counter() - start
    if failures:
        raise KafkaException(failures[0])
    return messages / elapsed


def _consume(config: dict[str, Any], topic: str, messages: int) -> float:
    consumer = Consumer({**config, "group.id": f"anyqueue-baseline-{uuid.uuid4().hex}"})
    consumer.subscribe([topic])
    received = 0
    first_at = 0.0
    deadline = time.monotonic() + PATIENCE
    try:
        while received < messages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the baseline consumer got {received} of {messages}")
            batch = consumer.consume(500, 0.1)
            records = [record for record in batch if record.error() is None]
            if not records:
                continue
            if received == 0:
                first_at = time.perf_counter()
            received += len(records)
            consumer.commit(asynchronous=True)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:  # nothing left to commit is fine
                raise
        elapsed = time.perf_counter() - first_at
    finally:
        consumer.close()
    return max(1, messages - 1) / elapsed if elapsed > 0 else math.inf


def _request_reply(
    producer_config: dict[str, Any],
    consumer_config: dict[str, Any],
    cluster: Cluster,
    options: KafkaOptions,
    run_id: str,
    body: bytes,
    requests: int,
) -> list[float]:
    request_topic = f"anyqueue-baseline-{run_id}-rpc"
    reply_topic = f"anyqueue-baseline-{run_id}-reply"
    cluster.ensure_topic(request_topic, options.partitions, options.replication_factor)
    cluster.ensure_topic(reply_topic, 1, options.replication_factor)
    cluster.partitions(reply_topic)
    stop = threading.Event()
    server_ready = threading.Event()
    server = threading.Thread(
        target=_serve,
        args=(producer_config, consumer_config, request_topic, stop, server_ready),
        daemon=True,
    )
    server.start()
    producer = Producer(producer_config)
    replies = Consumer({**consumer_config, "group.id": f"anyqueue-baseline-{uuid.uuid4().hex}"})
    replies.assign([TopicPartition(reply_topic, 0, 0)])
    latencies: list[float] = []
    try:
        if not server_ready.wait(PATIENCE):
            raise TimeoutError("the baseline server did not join its group")
        for index in range(requests + 1):  # the first one warms up
            correlation = str(index).encode()
            start = time.perf_counter()
            headers: list[tuple[str, str | bytes | None]] = [
                ("reply-to", reply_topic.encode()),
                ("id", correlation),
            ]
            producer.produce(request_topic, body, headers=headers)
            producer.poll(0)
            _await_reply(replies, correlation)
            if index:
                latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        server.join(PATIENCE)
        replies.close()
        producer.flush(PATIENCE)
        for topic in (request_topic, reply_topic):
            with contextlib.suppress(KafkaException):
                cluster.delete_topic(topic)
    return latencies


def _await_reply(replies: Consumer, correlation: bytes) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        record = replies.poll(0.5)
        if (
            record is not None
            and record.error() is None
            and dict(record.headers() or ()).get("id") == correlation
        ):
            return
    raise TimeoutError("no reply in the baseline round trip")


def _serve(
    producer_config: dict[str, Any],
    consumer_config: dict[str, Any],
    topic: str,
    stop: threading.Event,
    ready: threading.Event,
) -> None:
    producer = Producer(producer_config)
    consumer = Consumer({**consumer_config, "group.id": f"anyqueue-baseline-{uuid.uuid4().hex}"})
    consumer.subscribe([topic], on_assign=lambda _consumer, _partitions: ready.set())
    try:
        while not stop.is_set():
            record = consumer.poll(0.1)
            if record is None or record.error() is not None:
                continue
            headers = dict(record.headers() or ())
            reply_to = headers["reply-to"]
            assert isinstance(reply_to, bytes)
            producer.produce(reply_to.decode(), record.value(), headers=[("id", headers["id"])])
            producer.poll(0)
            consumer.commit(message=record, asynchronous=True)
    finally:
        consumer.close()
        producer.flush(PATIENCE)
