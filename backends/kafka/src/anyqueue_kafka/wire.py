"""How an anyqueue Message maps onto a Kafka record, and back.

The body is the record value and the key the record key (UTF-8), untouched, so plain Kafka
clients read and write anyqueue topics as ordinary records. Metadata travels in record headers
named `anyqueue.*`; user headers keep their names, except that a user header which itself starts
with `anyqueue.` is sent as `anyqueue.user.<name>` so the two can never be confused.
Records written by other clients arrive with an id made of their position and, lacking a
content-type header, `application/octet-stream`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from anyqueue.message import OCTET_STREAM, Message

PREFIX = "anyqueue."
ID = "anyqueue.id"
CONTENT_TYPE = "anyqueue.content-type"
CORRELATION_ID = "anyqueue.correlation-id"
REPLY_TO = "anyqueue.reply-to"
#: on a retry copy: the delivery count the copy is delivered with
ATTEMPT = "anyqueue.attempt"
#: on a retry copy: wall-clock time (seconds since the epoch) before which it is not delivered
NOT_BEFORE = "anyqueue.not-before"
#: on a retry copy: the topic the user published to (the copy lives in a retry topic)
ORIGIN = "anyqueue.topic"
USER = "anyqueue.user."

Headers = list[tuple[str, bytes]]


def record_headers(message: Message) -> Headers:
    """The Kafka headers of a message: its metadata, then the user headers."""
    headers: Headers = [(ID, message.id.encode())]
    if message.content_type != OCTET_STREAM:
        headers.append((CONTENT_TYPE, message.content_type.encode()))
    if message.correlation_id is not None:
        headers.append((CORRELATION_ID, message.correlation_id.encode()))
    if message.reply_to is not None:
        headers.append((REPLY_TO, message.reply_to.encode()))
    for name, value in message.headers.items():
        if name.startswith(PREFIX):
            name = USER + name
        headers.append((name, value.encode()))
    return headers


def retry_headers(message: Message, *, attempt: int, not_before: float | None) -> Headers:
    """The headers of a retry copy of a received message."""
    headers = record_headers(message)
    headers.append((ATTEMPT, str(attempt).encode()))
    headers.append((ORIGIN, message.topic.encode()))
    if not_before is not None:
        headers.append((NOT_BEFORE, repr(not_before).encode()))
    return headers


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


class Received:
    """A decoded record: the message plus the retry metadata the consumer acts on."""

    __slots__ = ("attempt", "message", "not_before")

    def __init__(self, message: Message, attempt: int, not_before: float) -> None:
        self.message = message
        self.attempt = attempt
        self.not_before = not_before

    def due(self, now: float | None = None) -> bool:
        return self.not_before <= (time.time() if now is None else now)


def decode(record: Any, receipt: Any) -> Received:
    """Turn a confluent_kafka Message into an anyqueue Message (topic, ids, headers set;
    delivery_count from the attempt header, 1 for a first delivery)."""
    raw_headers: Sequence[tuple[str, bytes | None]] = record.headers() or ()
    headers: dict[str, str] = {}
    message_id = content_type = correlation_id = reply_to = origin = None
    attempt = 1
    not_before = 0.0
    for name, raw in raw_headers:
        value = raw.decode(errors="replace") if raw is not None else ""
        if not name.startswith(PREFIX):
            headers[name] = value
        elif name.startswith(USER):
            headers[name[len(USER) :]] = value
        elif name == ID:
            message_id = value
        elif name == CONTENT_TYPE:
            content_type = value
        elif name == CORRELATION_ID:
            correlation_id = value
        elif name == REPLY_TO:
            reply_to = value
        elif name == ATTEMPT:
            attempt = _int(value, 1)
        elif name == NOT_BEFORE:
            not_before = _float(value, 0.0)
        elif name == ORIGIN:
            origin = value
        else:  # an anyqueue.* header this version does not know: keep it visible
            headers[name] = value
    key = record.key()
    value = record.value()
    message = Message(
        b"" if value is None else value,
        key=None if key is None else key.decode(errors="replace"),
        headers=headers,
        id=message_id or f"{record.topic()}-{record.partition()}@{record.offset()}",
        content_type=content_type or OCTET_STREAM,
        correlation_id=correlation_id,
        reply_to=reply_to,
        topic=origin or record.topic(),
        delivery_count=attempt,
        redelivered=attempt > 1,
        receipt=receipt,
    )
    return Received(message, attempt, not_before)


def _int(text: str, default: int) -> int:
    try:
        return max(1, int(text))
    except ValueError:
        return default


def _float(text: str, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default
