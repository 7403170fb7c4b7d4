"""How close can any anyqueue-like API on confluent-kafka get to the raw loops? Prints figures.

Against a throwaway Tansu broker, in one process, this runs the plain loops of the benchmark
baseline (produce everything then flush once; consume(500) and commit per batch) next to the
same loops doing only the least that an API handing out one message object per record must do:
publishing, one small object per message and an id header per record; consuming, one object per
record and a set of unsettled offsets. Their ratio bounds what `anyqueue bench kafka://...` can
show, whatever the implementation. Usage: uv run python scripts/kafka_floor.py [messages] [rounds]
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from anyqueue_kafka.admin import Cluster
from anyqueue_kafka.testing import TansuServer


class Minimal:
    """The least a received or published message can be: a few slots."""

    __slots__ = ("body", "id", "receipt", "settled")


def publish(config: dict[str, Any], topic: str, body: bytes, count: int, minimal: bool) -> float:
    producer = Producer(config)
    failures: list[Any] = []

    def delivered(error: Any, _record: Any) -> None:
        if error is not None:
            failures.append(error)

    producer.produce(f"{topic}-warm-up", body, on_delivery=delivered)  # producer id, metadata
    producer.flush(30)
    producer.list_topics(topic, timeout=30)
    start = time.perf_counter()
    if minimal:
        messages = []
        for number in range(count):
            message = Minimal()
            message.body, message.id = body, f"{number:026d}"
            messages.append(message)
        for message in messages:
            headers = {"anyqueue.id": message.id.encode()}
            producer.produce(topic, message.body, None, headers=headers, on_delivery=delivered)
    else:
        for _ in range(count):
            producer.produce(topic, body, on_delivery=delivered)
    producer.flush(60)
    elapsed = time.perf_counter() - start
    if failures:
        raise KafkaException(failures[0])
    return count / elapsed


def consume(config: dict[str, Any], topic: str, count: int, minimal: bool) -> float:
    consumer = Consumer({**config, "group.id": uuid.uuid4().hex})
    consumer.subscribe([topic])
    received, first_at = 0, 0.0
    unsettled: set[int] = set()
    while received < count:
        records = consumer.consume(500, 1.0)
        if not records:
            continue
        if not first_at:
            first_at = time.perf_counter()
        if minimal:
            messages = []
            for record in records:
                message = Minimal()
                message.body, message.receipt, message.settled = (
                    record.value(),
                    record.offset(),
                    False,
                )
                messages.append(message)
            unsettled.update(message.receipt for message in messages)
            for message in messages:
                message.settled = True
            unsettled.difference_update(message.receipt for message in messages)
        received += len(records)
        consumer.commit(asynchronous=True)
    elapsed = time.perf_counter() - first_at
    with contextlib.suppress(KafkaException):  # nothing new to commit is fine
        consumer.commit(asynchronous=False)
    consumer.close()
    return count / elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    body = os.urandom(100)
    with TansuServer(proxied=False) as server:
        cluster = Cluster({"bootstrap.servers": server.address}, timeout=30)
        producing = {
            "bootstrap.servers": server.address,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "sticky.partitioning.linger.ms": 0,
        }
        consuming = {
            "bootstrap.servers": server.address,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 5,
        }
        print(f"{count} messages of {len(body)} bytes per run; minimal / plain")
        for _ in range(rounds):
            plain_topic, minimal_topic = (f"floor-{uuid.uuid4().hex[:8]}" for _ in range(2))
            for name in (plain_topic, minimal_topic):
                for topic in (name, f"{name}-warm-up"):
                    cluster.ensure_topic(topic, 3, -1)
            plain = publish(producing, plain_topic, body, count, minimal=False)
            least = publish(producing, minimal_topic, body, count, minimal=True)
            # the same records for all three reads; the plain read before and after the other
            before = consume(consuming, plain_topic, count, minimal=False)
            reading = consume(consuming, plain_topic, count, minimal=True)
            after = consume(consuming, plain_topic, count, minimal=False)
            print(
                f"publish {least:9,.0f}/s / {plain:9,.0f}/s = {least / plain:.2f}x   "
                f"consume {reading:9,.0f}/s / {(before + after) / 2:9,.0f}/s = "
                f"{2 * reading / (before + after):.2f}x",
                flush=True,
            )
        cluster.close()


if __name__ == "__main__":
    main()
