"""Kafka names for anyqueue's topics and groups, chosen so that no two of them can collide.

- A topic keeps its portable name: `[A-Za-z0-9][A-Za-z0-9._-]*` fits Kafka's topic alphabet and
  its 249-character limit, so plain Kafka clients see the same topic.
- An anyqueue group belongs to one topic, so its consumer group id is `<topic>:<group>` (a colon
  never occurs in portable names, so the split is unambiguous): groups of one name on different
  topics never share rebalances or offsets.
- A group's retry topic (nacked and delayed messages) and its delivery-mark group carry a hash of
  (topic, group) after a readable, shortened prefix, which keeps them unique and within limits.
"""

from __future__ import annotations

import hashlib

#: Kafka's longest topic name
MAX_TOPIC_LENGTH = 249
RETRY_PREFIX = "anyqueue.retry."
REPLY_PREFIX = "anyqueue.reply."


def group_id(topic: str, group: str) -> str:
    """The Kafka consumer group id of anyqueue group `group` on `topic`."""
    return f"{topic}:{group}"


def marks_group_id(topic: str, group: str) -> str:
    """The offset-only group recording, per partition, how far `group` handed messages out
    (so redeliveries after a close, rebalance or crash are counted)."""
    return f"{topic}:{group}:delivered"


def retry_topic(topic: str, group: str) -> str:
    """The topic holding `group`'s nacked (and delayed) copies of `topic`'s messages."""
    digest = hashlib.sha256(f"{topic}\x00{group}".encode()).hexdigest()[:16]
    readable = f"{group[:60]}.{topic[:150]}"
    name = f"{RETRY_PREFIX}{readable}.{digest}"
    return name[:MAX_TOPIC_LENGTH]
