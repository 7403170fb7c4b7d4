"""How an anyqueue Message maps onto a Kafka record, and back.

The body is the record value and the key the record key (UTF-8), untouched, so plain Kafka
clients read and write anyqueue topics as ordinary records. Metadata travels in record headers
named `anyqueue.*`; user headers keep their names, except that a user header which itself starts
with `anyqueue.` is sent as `anyqueue.user.<name>` so the two can never be confused.
Records written by other clients arrive with an id made of their position and, lacking a
content-type header, `application/octet-stream`.
"""

from __future__ import annotations

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
_USER_LENGTH = len(USER)

Headers = list[tuple[str, str | bytes | None]]


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


def decode(record: Any, receipt: Any) -> Message:
    """Turn a confluent_kafka Message into an anyqueue Message (topic, id, headers set;
    delivery_count from the attempt header, 1 for a first delivery)."""
    headers: dict[str, str] = {}
    message_id = content_type = correlation_id = reply_to = origin = None
    attempt = 1
    raw_headers: list[tuple[str, bytes | None]] | None = record.headers()
    if raw_headers:
        for name, raw in raw_headers:
            value = "" if raw is None else raw.decode("utf-8", "replace")
            if name == ID:  # on every anyqueue record: test it first
                message_id = value
            elif not name.startswith(PREFIX):
                headers[name] = value
            elif name == CONTENT_TYPE:
                content_type = value
            elif name.startswith(USER):
                headers[name[_USER_LENGTH:]] = value
            elif name == CORRELATION_ID:
                correlation_id = value
            elif name == REPLY_TO:
                reply_to = value
            elif name == ATTEMPT:
                attempt = _int(value, 1)
            elif name == ORIGIN:
                origin = value
            elif name != NOT_BEFORE:  # an anyqueue.* header this version does not know
                headers[name] = value
    key = record.key()
    value = record.value()
    return Message.delivered(
        b"" if value is None else value,
        key=None if key is None else key.decode("utf-8", "replace"),
        headers=headers,
        id=message_id or f"{record.topic()}-{record.partition()}@{record.offset()}",
        content_type=content_type or OCTET_STREAM,
        correlation_id=correlation_id,
        reply_to=reply_to,
        topic=origin or record.topic(),
        delivery_count=attempt,
        receipt=receipt,
    )


def not_before(record: Any) -> float:
    """A retry copy's not-before time (0.0 when it has none)."""
    for name, raw in record.headers() or ():
        if name == NOT_BEFORE and raw is not None:
            return _float(raw.decode(errors="replace"), 0.0)
    return 0.0


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
