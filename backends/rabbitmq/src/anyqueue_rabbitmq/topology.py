"""How anyqueue's model maps onto RabbitMQ: exchanges, queue names, wait queues, headers.

- Topics are routing keys on two durable topic exchanges: `<exchange>` for ordinary topics and
  `<exchange>.dead` for dead-letter topics (names ending in `.dead`). A binding whose pattern
  ends in `.dead` goes on the second, any other on the first, so `logs.#` never sees
  `logs.eu.dead` while `logs.*.dead` does: the contract's rule, enforced by the broker itself.
- A group is the durable queue `<exchange>:<topic>:<group>` (`:` cannot occur in portable
  names, so no two (topic, group) pairs share a queue); names past AMQP's 255 bytes are
  shortened with a digest.
- `nack(delay=d)` republishes to a wait queue `<exchange>.wait.<ms>` whose messages expire after
  `ms` milliseconds and are dead-lettered through the default exchange back to the group's queue
  (their routing key is that queue's name). Delays are rounded up to a bucket (10 ms steps up
  to 100 ms, then two significant digits), so a delay is never shorter than asked and a few
  dozen wait queues serve every delay.
- Bookkeeping travels in headers the backend strips before the user sees them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from anyqueue.names import DEAD_SUFFIX

#: the longest queue or exchange name AMQP allows, in UTF-8 bytes
MAX_NAME_BYTES = 255

#: the message key (AMQP has none: the routing key is the topic)
KEY_HEADER = "x-anyqueue-key"
#: the topic a message was published to, on copies that reach a queue by another route
TOPIC_HEADER = "x-anyqueue-topic"
#: deliveries before this copy of the message was published (requeues republish with +1)
DELIVERIES_HEADER = "x-anyqueue-deliveries"
#: quorum queues count returns here
QUORUM_COUNT_HEADER = "x-delivery-count"

#: headers RabbitMQ adds when it dead-letters (our wait queues do), never user headers
_BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        QUORUM_COUNT_HEADER,
    }
)
RESERVED_HEADERS = _BROKER_HEADERS | {KEY_HEADER, TOPIC_HEADER, DELIVERIES_HEADER}

#: the pseudo-queue of RabbitMQ's direct reply-to
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

#: the longest per-queue TTL RabbitMQ accepts (2^32 - 1 ms)
MAX_DELAY_MS = 2**32 - 1


def dead_exchange(exchange: str) -> str:
    """The exchange that carries dead-letter topics."""
    return exchange + DEAD_SUFFIX


def exchange_for(exchange: str, topic_or_pattern: str) -> str:
    """Where `topic_or_pattern` is published or bound: dead-letter topics on their own exchange."""
    if topic_or_pattern.endswith(DEAD_SUFFIX):
        return dead_exchange(exchange)
    return exchange


def group_queue(exchange: str, topic: str, group: str) -> str:
    """The durable queue of `group` on `topic` (a name or a pattern)."""
    name = f"{exchange}:{topic}:{group}"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(f"{exchange}\0{topic}\0{group}".encode()).hexdigest()[:32]
    room = (MAX_NAME_BYTES - len(digest) - 4 - len(exchange.encode())) // 2  # 4 separators
    return f"{exchange}:{topic[:room]}~:{group[:room]}~{digest}"


def delay_bucket_ms(seconds: float) -> int:
    """The wait queue TTL for a delay: rounded up, never shorter than asked."""
    ms = max(1, math.ceil(seconds * 1000))
    if ms <= 100:
        return min(100, math.ceil(ms / 10) * 10)
    step: int = 10 ** (len(str(ms)) - 2)
    return min(MAX_DELAY_MS, math.ceil(ms / step) * step)


def wait_queue(exchange: str, ttl_ms: int) -> str:
    """The wait queue (and its fanout exchange) for one delay bucket."""
    return f"{exchange}.wait.{ttl_ms}"


def user_headers(raw: dict[str, Any] | None) -> dict[str, str]:
    """The user's headers from an AMQP table: bookkeeping removed, values as text (messages from
    other AMQP clients may carry numbers, tables or bytes)."""
    if not raw:
        return {}
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if name in RESERVED_HEADERS:
            continue
        if type(value) is str:
            headers[name] = value
        elif isinstance(value, bytes):
            headers[name] = value.decode("utf-8", "replace")
        else:
            headers[name] = str(value)
    return headers


def count_header(raw: dict[str, Any] | None, name: str) -> int:
    """A non-negative integer header (0 when absent or unreadable)."""
    if not raw:
        return 0
    value = raw.get(name)
    if value is None:
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
