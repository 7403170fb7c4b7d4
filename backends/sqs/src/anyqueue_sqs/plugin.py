"""Registers `sqs://` through the `anyqueue` entry point; imports nothing heavy (no boto3)."""

from __future__ import annotations

from collections.abc import Callable

from anyqueue.capabilities import Capabilities
from anyqueue.hookspecs import hookimpl
from anyqueue.plugins import BackendSpec

#: the largest body every message can carry: SNS takes 256 KiB in all, binary bodies travel
#: base64-encoded (4/3 larger), and ~6 KiB stay free for the id, key and headers
MAX_BODY_BYTES = 192_000
#: SQS keeps a message invisible for at most 12 hours (the longest nack delay)
MAX_VISIBILITY_SECONDS = 43_200


def capabilities_for(*, fifo: bool) -> Capabilities:
    """What an SQS connection promises: standard queues, or FIFO queues with `?fifo=true`."""
    return Capabilities(
        ordering="per_key" if fifo else "none",
        durable=True,
        ack_timeout=True,
        delay=True,
        wildcards=False,
        replays_history=False,
        nack=True,
        max_body_bytes=MAX_BODY_BYTES,
        max_delay_seconds=float(MAX_VISIBILITY_SECONDS),
        # standard queues deliver "at least once" and may, rarely, hand out a copy twice;
        # FIFO queues de-duplicate
        duplicate_fraction=0.0 if fifo else 0.01,
    )


@hookimpl
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="sqs",
            schemes=("sqs",),
            driver="anyqueue_sqs.driver:SQSDriver",
            distribution="anyqueue-sqs",
            capabilities=capabilities_for(fifo=False),
            description="Amazon SQS queues fed by SNS topics (boto3); ?fifo=true for per-key order",
            harness="anyqueue_sqs.testing:SQSHarness",
            baseline="anyqueue_sqs.bench:baseline",
        )
    )
