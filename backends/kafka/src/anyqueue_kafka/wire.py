"""How an anyqueue Message maps onto a Kafka record, and back.

The body is the record value and the key the record key (UTF-8), untouched, so plain Kafka
clients read and write anyqueue topics as ordinary records. Metadata travels in record headers
named `anyqueue.*`; user headers keep their names, except that a user header which itself starts
with `anyqueue.` is sent as `anyqueue.user.<name>` so the two can never be confused.
Records written by other clients arrive with an id made of their position and, lacking a
content-type header, `application/octet-stream`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar, cast, overload

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

#: the headers of a record being produced. A dict of bytes rather than confluent-kafka's list of
#: pairs: a dict holding only bytes is not tracked by the garbage collector, so a batch of
#: records adds no work for it (a list of tuples per record made collections a third of the
#: cost of publishing). Names cannot collide: user names starting `anyqueue.` are moved under
#: `anyqueue.user.`, a prefix none of the metadata names has.
Headers = dict[str, str | bytes | None]  # as confluent-kafka types it; this module puts bytes


def record_headers(message: Message) -> Headers:
    """The Kafka headers of a message: its metadata, then the user headers."""
    headers: Headers = {ID: message.id.encode()}
    if message.content_type != OCTET_STREAM:
        headers[CONTENT_TYPE] = message.content_type.encode()
    if message.correlation_id is not None:
        headers[CORRELATION_ID] = message.correlation_id.encode()
    if message.reply_to is not None:
        headers[REPLY_TO] = message.reply_to.encode()
    for name, value in message.headers.items():
        if name.startswith(PREFIX):
            name = USER + name
        headers[name] = value.encode()
    return headers


def retry_headers(message: Message, *, attempt: int, not_before: float | None) -> Headers:
    """The headers of a retry copy of a received message."""
    headers = record_headers(message)
    headers[ATTEMPT] = str(attempt).encode()
    headers[ORIGIN] = message.topic.encode()
    if not_before is not None:
        headers[NOT_BEFORE] = repr(not_before).encode()
    return headers


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


T = TypeVar("T")

#: a record's metadata: key, headers, id, content type, correlation id, reply-to, topic,
#: delivery count and redelivered
Metadata = tuple[str | None, dict[str, str], str, str, str | None, str | None, str, int, bool]


def metadata(record: Any) -> Metadata:
    """What a confluent_kafka Message says besides its body: key, headers, id (made of its
    position if it has none), content type, correlation id, reply-to, topic (the origin of a
    retry copy), delivery count (from the attempt header, 1 for a first delivery) and whether
    that makes it a redelivery."""
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
    return (
        None if key is None else key.decode("utf-8", "replace"),
        headers,
        message_id or f"{record.topic()}-{record.partition()}@{record.offset()}",
        content_type or OCTET_STREAM,
        correlation_id,
        reply_to,
        origin or record.topic(),
        attempt,
        attempt > 1,
    )


def decode(record: Any, receipt: Any) -> Message:
    """Turn a confluent_kafka Message into an anyqueue Message, all of it decoded now."""
    key, headers, message_id, content_type, correlation_id, reply_to, topic, count, _ = metadata(
        record
    )
    value = record.value()
    return Message.delivered(
        b"" if value is None else value,
        key=key,
        headers=headers,
        id=message_id,
        content_type=content_type,
        correlation_id=correlation_id,
        reply_to=reply_to,
        topic=topic,
        delivery_count=count,
        receipt=receipt,
    )


def received(records: Sequence[Any], receipts: Iterable[Any], *, inherited: bool) -> list[Message]:
    """Messages of these records with their receipts, the metadata decoded when first read
    (`inherited`: a previous owner of the partition handed them out already)."""
    cls = InheritedMessage if inherited else ReceivedMessage
    new = object.__new__
    messages: list[Message] = []
    append = messages.append
    for record, receipt in zip(records, receipts):
        message = new(cls)
        message.body = record.value() or b""
        message.receipt = receipt
        message._lazy = record
        message._subscription = None
        message._settled = False
        append(message)
    return messages


class _Decoded(Generic[T]):
    """An attribute of a ReceivedMessage: field `index` of its metadata, decoded from the
    record when any of them is first read (setting one decodes the others first)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    @overload
    def __get__(self, message: None, owner: type) -> _Decoded[T]: ...
    @overload
    def __get__(self, message: ReceivedMessage, owner: type) -> T: ...
    def __get__(self, message: ReceivedMessage | None, owner: type) -> T | _Decoded[T]:
        if message is None:
            return self
        lazy = message._lazy
        metadata_: Metadata = lazy if type(lazy) is tuple else message._decode()
        return cast(T, metadata_[self.index])

    def __set__(self, message: ReceivedMessage, value: T) -> None:
        message._replace(self.index, value)


class ReceivedMessage(Message):
    """A received Message whose metadata (everything but body and receipt) is decoded from its
    record when first read: a consumer that reads only bodies never pays for the headers.

    The metadata lives in one tuple, swapped whole, so a reader never sees half of it; two
    threads reading a fresh message at once both decode it, to equal values."""

    __slots__ = ("_lazy",)

    #: deliveries by a previous owner of the partition, not counted in the record's headers
    _earlier = 0

    _lazy: Any  # the confluent_kafka Message, until decoded into a Metadata tuple

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # built by hand (a copy): the base class's __init__ fills the metadata through the
        # setters below, starting from nothing to decode
        self._lazy = (None, {}, "", OCTET_STREAM, None, None, "", 0, False)
        super().__init__(*args, **kwargs)

    def _decode(self) -> Metadata:
        metadata_ = metadata(self._lazy)
        if self._earlier:
            count = metadata_[7] + self._earlier
            metadata_ = (*metadata_[:7], count, True)
        self._lazy = metadata_
        return metadata_

    def _replace(self, index: int, value: Any) -> None:
        lazy = self._lazy
        fields = list(lazy if type(lazy) is tuple else self._decode())
        fields[index] = value
        self._lazy = tuple(fields)

    key = _Decoded[str | None](0)
    headers = _Decoded[dict[str, str]](1)
    id = _Decoded[str](2)
    content_type = _Decoded[str](3)
    correlation_id = _Decoded[str | None](4)
    reply_to = _Decoded[str | None](5)
    topic = _Decoded[str](6)
    delivery_count = _Decoded[int](7)
    redelivered = _Decoded[bool](8)


class InheritedMessage(ReceivedMessage):
    """A ReceivedMessage that a previous owner of its partition handed out already."""

    __slots__ = ()
    _earlier = 1


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
