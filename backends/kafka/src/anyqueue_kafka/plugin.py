"""Registers `kafka://` with anyqueue; imports nothing heavy (confluent-kafka loads on use)."""

from __future__ import annotations

from collections.abc import Callable

from anyqueue.capabilities import Capabilities
from anyqueue.hookspecs import hookimpl
from anyqueue.plugins import BackendSpec

CAPABILITIES = Capabilities(
    ordering="per_key",
    durable=True,
    ack_timeout=False,
    delay=True,
    wildcards=False,
    replays_history=False,
    nack=True,
    max_body_bytes=1_000_000,
    # a delayed copy waits in the group's retry topic: keep it well inside topic retention
    max_delay_seconds=24 * 3600.0,
    duplicate_fraction=0.0,
)


@hookimpl
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="kafka",
            schemes=("kafka",),
            driver="anyqueue_kafka.driver:KafkaDriver",
            distribution="anyqueue-kafka",
            capabilities=CAPABILITIES,
            description="Apache Kafka (and Kafka-protocol brokers) through confluent-kafka",
            harness="anyqueue_kafka.testing:KafkaHarness",
            baseline="anyqueue_kafka.bench:baseline",
        )
    )
