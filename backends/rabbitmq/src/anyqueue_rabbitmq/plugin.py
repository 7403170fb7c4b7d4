"""Registers `amqp://` and `amqps://` (RabbitMQ through pika); imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable

from anyqueue.capabilities import Capabilities
from anyqueue.hookspecs import hookimpl
from anyqueue.plugins import BackendSpec

#: 16 MiB: RabbitMQ 4's default max_message_size, well inside 3.x's 128 MiB
MAX_BODY_BYTES = 16 * 1024 * 1024

CAPABILITIES = Capabilities(
    ordering="global",
    durable=True,
    ack_timeout=True,
    delay=True,
    wildcards=True,
    replays_history=False,
    nack=True,
    max_body_bytes=MAX_BODY_BYTES,
    max_delay_seconds=(2**32 - 1) / 1000,  # the longest per-queue TTL RabbitMQ accepts
    duplicate_fraction=0.0,
)


@hookimpl
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="rabbitmq",
            schemes=("amqp", "amqps"),
            driver="anyqueue_rabbitmq.driver:RabbitDriver",
            distribution="anyqueue-rabbitmq",
            capabilities=CAPABILITIES,
            description="RabbitMQ through pika: topic exchanges, publisher confirms, "
            "direct reply-to",
            harness="anyqueue_rabbitmq.testing:RabbitHarness",
            baseline="anyqueue_rabbitmq.bench:baseline",
        )
    )
