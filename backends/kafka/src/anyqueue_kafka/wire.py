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
_METADATA = frozenset({ID, CONTENT_TYPE, CORRELATION_ID, REPLY_TO, ATTEMPT, NOT_BEFORE, ORIGIN})

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
    meta: dict[str, str] = {}
    raw_headers: list[tuple[str, bytes | None]] | None = record.headers()
    if raw_headers:
        for name, raw in raw_headers:
            value = "" if raw is None else raw.decode(errors="replace")
            if not name.startswith(PREFIX):
                headers[name] = value
            elif name.startswith(USER):
                headers[name[_USER_LENGTH:]] = value
            elif name in _METADATA:
                meta[name] = value
            else:  # an anyqueue.* header this version does not know: keep it visible
                headers[name] = value
    key = record.key()
    value = record.value()
    attempt = _int(meta[ATTEMPT], 1) if ATTEMPT in meta else 1
    return Message(
        b"" if value is None else value,
        key=None if key is None else key.decode(errors="replace"),
        headers=headers,
        id=meta.get(ID) or f"{record.topic()}-{record.partition()}@{record.offset()}",
        content_type=meta.get(CONTENT_TYPE) or OCTET_STREAM,
        correlation_id=meta.get(CORRELATION_ID),
        reply_to=meta.get(REPLY_TO),
        topic=meta.get(ORIGIN) or record.topic(),
        delivery_count=attempt,
        redelivered=attempt > 1,
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
