"""The record mapping, on real confluent_kafka Message objects (no broker needed)."""

from __future__ import annotations

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
        headers=headers,
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
    names = [name for name, _ in wire.record_headers(Message(b"x", id="i"))]
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
