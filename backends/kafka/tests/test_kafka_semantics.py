"""What the Kafka mapping adds to the shared suite, against a Tansu broker started by the tests:
contiguous-prefix commits, retry topics, plain-Kafka interoperability, the reply inbox."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import anyqueue
from anyqueue_conformance.suite import ODD_HEADERS
from anyqueue_kafka import naming
from anyqueue_kafka.driver import FETCH_QUEUE_BACKOFF_MS
from anyqueue_kafka.testing import TansuServer


@pytest.fixture
def broker(tansu: TansuServer) -> Iterator[anyqueue.Broker]:
    with anyqueue.connect(tansu.url()) as connected:
        yield connected


@pytest.fixture
def topic() -> str:
    return "kt" + uuid.uuid4().hex[:10]


def drain(sub: anyqueue.Subscription, count: int, timeout: float) -> list[anyqueue.Message]:
    got: list[anyqueue.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = sub.receive(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None:
            got.append(message)
    return got


def test_out_of_order_acks_commit_only_the_contiguous_prefix(
    tansu: TansuServer, topic: str
) -> None:
    with anyqueue.connect(tansu.url(), partitions=1) as broker:
        broker.declare(topic, "g")
        ids = broker.publish_batch(topic, [b"0", b"1", b"2", b"3"])
        with broker.subscribe(topic, "g", prefetch=4) as sub:
            first = drain(sub, 4, 30)
            assert [m.body for m in first] == [b"0", b"1", b"2", b"3"]
            for message in first:
                if message.body != b"1":
                    message.ack()  # 0, 2 and 3 acked; 1 still in flight
        with broker.subscribe(topic, "g", prefetch=4) as sub:
            again = drain(sub, 3, 30)
            for message in again:
                message.ack()
            assert sub.receive(timeout=1) is None
    # 0 was committed; 1 was not, so nothing after it was either: 2 and 3 come again (at least
    # once), and nothing is lost
    assert [m.id for m in again] == ids[1:]
    assert again[0].delivery_count == 2 and again[0].redelivered


def test_delayed_nack_survives_its_subscription(broker: anyqueue.Broker, topic: str) -> None:
    broker.declare(topic, "g")
    message_id = broker.publish(topic, b"later", key="k", headers={"h": "v"})
    with broker.subscribe(topic, "g") as sub:
        message = sub.receive(timeout=30)
        assert message is not None
        nacked_at = time.monotonic()
        message.nack(delay=2.0)
    # the copy waits in the group's retry topic, not in this process
    with broker.subscribe(topic, "g") as sub:
        again = sub.receive(timeout=30)
        assert again is not None
        assert time.monotonic() - nacked_at >= 2.0
        assert (again.id, again.body, again.key, again.headers) == (
            message_id,
            b"later",
            "k",
            {"h": "v"},
        )
        assert again.topic == topic and again.delivery_count == 2
        again.ack()


def test_reserved_header_names_round_trip(broker: anyqueue.Broker, topic: str) -> None:
    headers = {"anyqueue.id": "user value", "anyqueue.user.x": "y", "plain": "z"}
    with broker.subscribe(topic) as sub:
        message_id = broker.publish(topic, b"x", headers=headers)
        got = sub.receive(timeout=30)
    assert got is not None
    assert (got.id, got.headers) == (message_id, headers)


def test_a_header_that_cannot_be_encoded_sends_nothing_of_the_batch(
    broker: anyqueue.Broker, topic: str
) -> None:
    unencodable = anyqueue.Message(b"bad", headers={"h": "lone \ud800 surrogate"})
    with broker.subscribe(topic) as sub:
        with pytest.raises(anyqueue.Error):
            broker.publish_batch(topic, [b"fine", unencodable])
        broker.publish(topic, b"after")
        got = sub.receive(timeout=30)
    assert got is not None and got.body == b"after"


def test_odd_headers_and_keys_round_trip(broker: anyqueue.Broker, topic: str) -> None:
    # the suite's test_headers expects its two messages (different keys, so possibly different
    # partitions) in publish order; per-key ordering does not promise that, so match by body
    with broker.subscribe(topic) as sub:
        broker.publish(topic, b"h", key="key with ünïcode ☃", headers=ODD_HEADERS)
        broker.publish(topic, b"none")
        got = {m.body: m for m in drain(sub, 2, 30)}
    assert (got[b"h"].headers, got[b"h"].key) == (ODD_HEADERS, "key with ünïcode ☃")
    assert (got[b"none"].headers, got[b"none"].key) == ({}, None)


def test_plain_kafka_clients_interoperate(
    broker: anyqueue.Broker, tansu: TansuServer, topic: str
) -> None:
    plain = {"bootstrap.servers": tansu.address}
    with broker.subscribe(topic) as sub:
        # a record from a plain producer: no anyqueue metadata at all
        producer = Producer(plain)
        producer.produce(topic, b"raw", key=b"rk", headers=[("h", b"v")])
        assert producer.flush(10) == 0
        got = sub.receive(timeout=30)
        assert got is not None
        assert (got.body, got.key, got.headers) == (b"raw", "rk", {"h": "v"})
        assert got.content_type == "application/octet-stream"
        assert got.id.startswith(f"{topic}-") and got.delivery_count == 1
        got.ack()
    # an anyqueue message read by a plain consumer: value and key untouched, headers readable
    message_id = broker.publish(topic, {"n": 1}, key="k", headers={"trace": "t"})
    consumer = Consumer({**plain, "group.id": "plain-" + topic, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 2 and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is not None and record.error() is None:
                records.append(record)
    finally:
        consumer.close()
    record = next(r for r in records if r.key() == b"k")
    headers = {name: value.decode() for name, value in record.headers()}
    assert record.value() == b'{"n":1}'
    assert headers["trace"] == "t"
    assert headers["anyqueue.id"] == message_id
    assert headers["anyqueue.content-type"] == "application/json"


def test_requests_join_no_group_and_the_reply_topic_goes_away(
    tansu: TansuServer, topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": tansu.address})

    def groups() -> set[str]:
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        return {group.group_id for group in listed.valid}

    def reply_topics() -> set[str]:
        topics = admin.list_topics(timeout=10).topics
        return {name for name in topics if name.startswith(naming.REPLY_PREFIX)}

    groups_before, inboxes_before = groups(), reply_topics()
    with (
        anyqueue.connect(tansu.url()) as server,
        anyqueue.connect(tansu.url()) as caller,
        server.serve(topic, lambda request: request.body[::-1]),
    ):
        for i in range(5):
            reply = caller.request(topic, f"r{i}".encode(), timeout=30)
            assert reply.body == f"r{i}".encode()[::-1]
        inboxes = reply_topics() - inboxes_before
        new_groups = groups() - groups_before
    # the serving group and its delivery marks; the caller's inbox joined no group
    assert new_groups == {
        naming.group_id(topic, "anyqueue.rpc"),
        naming.marks_group_id(topic, "anyqueue.rpc"),
    }
    assert len(inboxes) == 1, "one reply topic per connection, not per request"
    assert not inboxes & reply_topics(), "the reply topic is deleted on close"


def test_same_group_name_on_two_topics_are_separate_groups(
    broker: anyqueue.Broker, topic: str
) -> None:
    other = topic + ".other"
    for name in (topic, other):
        broker.declare(name, "workers")
        broker.publish(name, name.encode())
    with broker.subscribe(topic, "workers") as one, broker.subscribe(other, "workers") as two:
        assert [m.body for m in drain(one, 1, 30)] == [topic.encode()]
        assert [m.body for m in drain(two, 1, 30)] == [other.encode()]


def test_subscriptions_fetch_again_soon_after_their_local_queue_drains(
    broker: anyqueue.Broker,
) -> None:
    # librdkafka's default waits a whole second: reading a backlog, a consumer slower than the
    # broker idled most of the time (a figure for the benchmark, not for a timed test)
    config = broker._driver._consumer_config("g")  # type: ignore[attr-defined]
    assert config["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS <= 100
