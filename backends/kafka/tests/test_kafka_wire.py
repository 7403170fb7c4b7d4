"""The record mapping, on real confluent_kafka Message objects (no broker needed)."""

from __future__ import annotations

import copy
import gc

import pytest
from confluent_kafka import Message as Record

from anyqueue.message import Message
from anyqueue_kafka import wire


def as_record(message: Message, headers: wire.Headers, topic: str = "orders") -> Record:
    return Record(
        topic=topic,
        partition=2,
        offset=41,
        key=wire.encode_key(message.key),
        value=message.body,
        headers=list(headers.items()),  # as a broker returns them
    )


def test_a_message_round_trips_through_a_record() -> None:
    sent = Message(
        b'{"a":1}',
        key="k ☃",
        headers={"trace": "t", "anyqueue.id": "mine", "anyqueue.user.x": "y", "": "empty name"},
        id="id-1",
        content_type="application/json",
        correlation_id="c-1",
        reply_to="anyqueue.reply.abc",
    )
    got = wire.decode(as_record(sent, wire.record_headers(sent)), receipt="r")
    assert (got.body, got.key, got.headers, got.id) == (sent.body, sent.key, sent.headers, "id-1")
    assert (got.content_type, got.correlation_id, got.reply_to) == (
        "application/json",
        "c-1",
        "anyqueue.reply.abc",
    )
    assert (got.topic, got.delivery_count, got.redelivered, got.receipt) == (
        "orders",
        1,
        False,
        "r",
    )


def test_octet_stream_needs_no_header() -> None:
    names = list(wire.record_headers(Message(b"x", id="i")))
    assert names == [wire.ID]


def test_a_retry_copy_carries_its_topic_attempt_and_time() -> None:
    received = Message(b"x", key="k", headers={"h": "v"}, id="i", topic="orders", delivery_count=2)
    headers = wire.retry_headers(received, attempt=3, not_before=1234.5)
    record = as_record(received, headers, topic="anyqueue.retry.g.orders.0123456789abcdef")
    got = wire.decode(record, receipt=None)
    assert (got.topic, got.delivery_count, got.redelivered) == ("orders", 3, True)
    assert (got.id, got.key, got.headers) == ("i", "k", {"h": "v"})
    assert wire.not_before(record) == 1234.5
    assert wire.not_before(as_record(received, wire.record_headers(received))) == 0.0


def test_records_from_other_clients() -> None:
    record = Record(
        topic="orders", partition=1, offset=7, key=b"\xff", value=None, headers=[("h", b"\xfe")]
    )
    got = wire.decode(record, receipt=None)
    assert (got.id, got.body, got.content_type) == ("orders-1@7", b"", "application/octet-stream")
    assert (got.key, got.headers) == ("\ufffd", {"h": "\ufffd"})


def lazily(record: Record, receipt: object = "r", inherited: bool = False) -> Message:
    (message,) = wire.received([record], [receipt], inherited=inherited)
    return message


FIELDS = (
    "body",
    "key",
    "headers",
    "id",
    "content_type",
    "correlation_id",
    "reply_to",
    "topic",
    "delivery_count",
    "redelivered",
    "receipt",
)


def fields(message: Message) -> dict[str, object]:
    return {name: getattr(message, name) for name in FIELDS}


def sample_records() -> list[Record]:
    sent = Message(
        b"body",
        key="k ☃",
        headers={"trace": "t", "anyqueue.id": "mine", "": "empty name"},
        id="id-1",
        content_type="application/json",
        correlation_id="c-1",
        reply_to="anyqueue.reply.abc",
    )
    retry = Message(b"x", key="k", headers={"h": "v"}, id="i", topic="orders", delivery_count=2)
    return [
        as_record(sent, wire.record_headers(sent)),
        as_record(retry, wire.retry_headers(retry, attempt=3, not_before=1.0), topic="retry"),
        Record(topic="orders", partition=1, offset=7, key=b"\xff", value=None, headers=None),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_lazily_decoded_message_equals_the_eager_decoding(index: int) -> None:
    record = sample_records()[index]
    assert fields(lazily(record)) == fields(wire.decode(record, receipt="r"))


@pytest.mark.parametrize("name", FIELDS[1:-1])
def test_each_attribute_read_first_decodes_all_of_them(name: str) -> None:
    record = sample_records()[1]
    message = lazily(record)
    getattr(message, name)
    assert fields(message) == fields(wire.decode(record, receipt="r"))


def test_a_message_handed_out_before_counts_one_delivery_more() -> None:
    first, retry, _ = sample_records()
    assert (lazily(first, inherited=True).delivery_count, lazily(first).delivery_count) == (2, 1)
    assert lazily(first, inherited=True).redelivered
    assert (lazily(retry, inherited=True).delivery_count, lazily(retry).redelivered) == (4, True)


def test_what_is_set_before_the_first_read_stays_and_the_rest_is_decoded() -> None:
    record = sample_records()[0]
    message = lazily(record)
    message.headers = {"new": "1"}  # the first access: a write
    message.delivery_count += 1
    expected = fields(wire.decode(record, receipt="r"))
    expected.update(delivery_count=2, headers={"new": "1"})
    assert fields(message) == expected
    assert message.redelivered is False  # set only as delivered; a setter changes one field


def test_a_lazy_message_copies_and_builds_like_any_message() -> None:
    record = sample_records()[0]
    original = lazily(record)
    assert fields(copy.copy(original)) == fields(wire.decode(record, receipt="r"))
    built = wire.ReceivedMessage("text", key="k", headers={"a": "b"}, topic="t", delivery_count=3)
    assert (built.body, built.content_type, built.key, built.headers) == (
        b"text",
        "text/plain",
        "k",
        {"a": "b"},
    )
    assert (built.id, built.topic, built.delivery_count, built.correlation_id) == ("", "t", 3, None)
    assert isinstance(original, Message)
    assert "id='id-1'" in repr(original)


def test_record_headers_give_the_garbage_collector_nothing_to_track() -> None:
    # publishing builds one per record: a tracked container per record made collections a
    # large part of a big batch's cost
    message = Message(b"x", key="k", headers={"h": "v"}, correlation_id="c", reply_to="r")
    assert not gc.is_tracked(wire.record_headers(message))
    assert not gc.is_tracked(wire.retry_headers(message, attempt=2, not_before=1.5))
