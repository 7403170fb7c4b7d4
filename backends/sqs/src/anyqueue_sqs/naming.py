"""Portable topic and group names mapped onto SQS queue and SNS topic names, deterministically
and without collisions.

Portable names allow `[A-Za-z0-9._-]` and up to 200 characters (plus `.dead` suffixes); SQS queue
names allow `[A-Za-z0-9_-]` and 80 characters including a `.fifo` suffix, SNS topic names 256.
Every name starts with the connection's `prefix` and then one of three shapes, told apart by the
character right after the prefix:

    PREFIX-orders__workers            readable: "." became "_", topic and group joined by "__"
    PREFIX_very_long_topic_na-<hash>  hashed: a readable head plus 16 hex digits of BLAKE2b
    PREFIX__sub-orders-<uuid>         temporary: ephemeral groups and reply inboxes

The readable shape is used only when it can be decoded back unambiguously: neither name contains
`_` (which would be confused with a replaced dot) nor `..` (which would be confused with the
`__` separator), and the result fits. Everything else is hashed over the exact names, so two
different topics or (topic, group) pairs never share a queue.
"""

from __future__ import annotations

import hashlib
import re
import uuid

QUEUE_NAME_LIMIT = 80
TOPIC_NAME_LIMIT = 256
FIFO_SUFFIX = ".fifo"
HASH_DIGITS = 16

#: what a `prefix` option may look like (it is the first part of every name)
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-]{0,20}")


def _readable(name: str) -> str:
    return name.replace(".", "_")


def _decodable(name: str) -> bool:
    return "_" not in name and ".." not in name


def _digest(*parts: str) -> str:
    # "\n" never occurs in a portable name, so the joined input is unambiguous
    data = "\n".join(parts).encode()
    return hashlib.blake2b(data, digest_size=HASH_DIGITS // 2).hexdigest()


def _shape(prefix: str, parts: tuple[str, ...], limit: int, fifo: bool) -> str:
    suffix = FIFO_SUFFIX if fifo else ""
    readable = "__".join(_readable(part) for part in parts)
    if all(_decodable(part) for part in parts):
        name = f"{prefix}-{readable}{suffix}"
        if len(name) <= limit:
            return name
    room = limit - len(prefix) - 1 - 1 - HASH_DIGITS - len(suffix)
    head = readable[:room].rstrip("_-") or "x"
    return f"{prefix}_{head}-{_digest(*parts)}{suffix}"


def queue_name(prefix: str, topic: str, group: str, *, fifo: bool) -> str:
    """The SQS queue holding `group`'s messages of `topic`."""
    return _shape(prefix, (topic, group), QUEUE_NAME_LIMIT, fifo)


def topic_name(prefix: str, topic: str, *, fifo: bool) -> str:
    """The SNS topic that fans `topic`'s messages out to its groups' queues."""
    return _shape(prefix, (topic,), TOPIC_NAME_LIMIT, fifo)


def temporary_queue_name(prefix: str, kind: str, topic: str = "", *, fifo: bool) -> str:
    """A unique queue for an ephemeral group (`kind` "sub") or a reply inbox ("reply")."""
    suffix = FIFO_SUFFIX if fifo else ""
    unique = uuid.uuid4().hex
    room = QUEUE_NAME_LIMIT - len(prefix) - len(kind) - 3 - len(unique) - 1 - len(suffix)
    head = _readable(topic)[: max(0, room)].rstrip("_-")
    middle = f"{head}-" if head else ""
    return f"{prefix}__{kind}-{middle}{unique}{suffix}"
