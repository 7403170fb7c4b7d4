"""The subscription's fetch buffer and offset bookkeeping, fed records directly (no broker: the
confluent_kafka consumers are stand-ins)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as Record

from anyqueue.message import Message
from anyqueue_kafka import subscription as kafka_subscription
from anyqueue_kafka.subscription import MARK_AHEAD, GroupTarget, KafkaSubscription

TOPIC = "orders"


class StubConsumer:
    """Just enough of confluent_kafka.Consumer: remembers commits, reports `marks`, and
    confirms asynchronous commits (with `failure` as their error) when polled."""

    marks: dict[tuple[str, int], int] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        self.on_commit = config.get("on_commit")
        self.commits: list[dict[tuple[str, int], int]] = []
        self.waited: list[bool] = []  # per commit: whether it was synchronous
        self.pending: list[list[TopicPartition]] = []
        self.failure: KafkaError | None = None
        self.refuse = False  # synchronous commits fail

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> None:
        pending, self.pending = self.pending, []
        for offsets in pending:
            if self.on_commit is not None:
                self.on_commit(self.failure, offsets)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self.waited.append(not asynchronous)
        if asynchronous:
            self.pending.append(offsets)
        elif self.refuse:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.marks.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def assignment(self) -> list[TopicPartition]:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def subscription(monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaSubscription]:
    monkeypatch.setattr(kafka_subscription, "Consumer", StubConsumer)
    monkeypatch.setattr(StubConsumer, "marks", {})
    options = SimpleNamespace(
        commit_interval=1e9, rebalance_grace=0.0, timeout=0, session_timeout=0
    )
    driver: Any = SimpleNamespace(options=options)
    target = GroupTarget("g", "g.marks", "retry." + TOPIC)
    sub = KafkaSubscription(driver, {}, topic=TOPIC, group=target)
    yield sub
    sub.close()


def assign(sub: KafkaSubscription, *partitions: int) -> None:
    sub._on_assign(sub._consumer, [TopicPartition(TOPIC, p) for p in partitions])


def record(partition: int, offset: int, body: bytes | None = None) -> Record:
    value = body if body is not None else f"p{partition}@{offset}".encode()
    return Record(topic=TOPIC, partition=partition, offset=offset, value=value)


def where(messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.receipt[0].key[1], m.receipt[1]) for m in messages]


def committed(sub: KafkaSubscription) -> dict[tuple[str, int], int]:
    sub._commit(wait=True)
    consumer: Any = sub._consumer
    commits: list[dict[tuple[str, int], int]] = consumer.commits
    return commits[-1]


def test_runs_of_several_partitions_are_handed_out_in_order(
    subscription: KafkaSubscription,
) -> None:
    assign(subscription, 0, 1)
    fetched = [
        *(record(0, offset, b"x" * offset) for offset in range(10, 15)),
        *(record(1, offset, b"y" * (offset + 1)) for offset in range(3)),
        record(0, 15, b"z"),
        record(0, 16, b""),
    ]
    subscription._accept(fetched)
    ready = subscription._ready
    assert (ready.count, ready.size) == (10, 10 + 11 + 12 + 13 + 14 + 1 + 2 + 3 + 1)
    first = subscription.receive(4, 0)
    assert where(first) == [(0, 10), (0, 11), (0, 12), (0, 13)]
    assert (ready.count, ready.size) == (6, 14 + 1 + 2 + 3 + 1)
    second = subscription.receive(3, 0)
    assert where(second) == [(0, 14), (1, 0), (1, 1)]
    rest = subscription.receive(10, 0)
    assert where(rest) == [(1, 2), (0, 15), (0, 16)]
    assert (ready.count, ready.size) == (0, 0)
    assert [m.body for m in rest] == [b"yyy", b"z", b""]
    assert [m.id for m in second] == [f"{TOPIC}-0@14", f"{TOPIC}-1@0", f"{TOPIC}-1@1"]
    tracks = subscription._tracks
    assert (tracks[(TOPIC, 0)].handed, tracks[(TOPIC, 1)].handed) == (17, 3)


def test_out_of_order_acks_commit_only_the_contiguous_prefix(
    subscription: KafkaSubscription,
) -> None:
    assign(subscription, 0, 1)
    subscription._accept([*(record(0, o) for o in range(5)), *(record(1, o) for o in range(3))])
    messages = subscription.receive(8, 0)
    by_place = dict(zip(where(messages), messages))
    subscription.ack([by_place[0, 0], by_place[0, 3], by_place[1, 2], by_place[1, 0]])
    assert committed(subscription) == {(TOPIC, 0): 1, (TOPIC, 1): 1}
    subscription.ack([by_place[1, 1]])  # a batch of one partition only
    subscription.ack([by_place[0, 2], by_place[0, 1]])
    assert committed(subscription) == {(TOPIC, 0): 4, (TOPIC, 1): 3}
    subscription.ack([by_place[0, 4], by_place[0, 4]])
    assert committed(subscription) == {(TOPIC, 0): 5, (TOPIC, 1): 3}


def test_records_a_previous_owner_handed_out_count_a_delivery_more(
    subscription: KafkaSubscription,
) -> None:
    StubConsumer.marks[(TOPIC, 0)] = 12
    assign(subscription, 0)
    subscription._accept([record(0, offset) for offset in range(10, 15)])
    first = subscription.receive(1, 0)
    rest = subscription.receive(10, 0)  # up to the inherited mark: the rest waits for its own
    rest += subscription.receive(10, 0)
    counts = [(m.receipt[1], m.delivery_count, m.redelivered) for m in first + rest]
    assert counts == [
        (10, 2, True),
        (11, 2, True),
        (12, 1, False),
        (13, 1, False),
        (14, 1, False),
    ]


def test_error_records_and_foreign_partitions_are_left_out(
    subscription: KafkaSubscription, caplog: pytest.LogCaptureFixture
) -> None:
    assign(subscription, 0)
    failure = Record(topic=TOPIC, partition=0, error=KafkaError(KafkaError._TRANSPORT))
    with caplog.at_level(logging.WARNING, logger="anyqueue.kafka"):
        subscription._accept([record(0, 0), failure, record(0, 1), record(5, 0), record(0, 2)])
    assert "transport" in caplog.text.lower()
    assert where(subscription.receive(10, 0)) == [(0, 0), (0, 1), (0, 2)]
    assert subscription._tracks[(TOPIC, 0)].unsettled == {0, 1, 2}


def test_a_lost_partition_takes_back_what_was_not_handed_out(
    subscription: KafkaSubscription,
) -> None:
    assign(subscription, 0, 1)
    subscription._accept([*(record(0, o, b"ab") for o in range(4)), record(1, 0, b"abc")])
    (handed,) = subscription.receive(1, 0)
    subscription._on_lost(subscription._consumer, [TopicPartition(TOPIC, 0)])
    assert (subscription._ready.count, subscription._ready.size) == (1, 3)
    assert where(subscription.receive(10, 0)) == [(1, 0)]
    subscription.ack([handed])  # its partition is someone else's now: ignored
    assert (TOPIC, 0) not in subscription._tracks


def test_fetching_requests_delivery_marks_ahead_and_never_waits_for_them(
    subscription: KafkaSubscription,
) -> None:
    assign(subscription, 0)
    marks: Any = subscription._marks
    track = subscription._tracks[(TOPIC, 0)]
    subscription._accept([record(0, o) for o in range(10)])
    assert (marks.commits, marks.waited) == ([{(TOPIC, 0): 10 + MARK_AHEAD}], [False])
    assert (track.marked, track.requested) == (0, 10 + MARK_AHEAD)
    subscription._accept([record(0, o) for o in range(10, 200)])  # within the window
    assert len(marks.commits) == 1
    subscription._accept([record(0, o) for o in range(200, 520)])
    # a quarter of a window past the last request: the next one
    assert (marks.commits[1:], marks.waited[1:]) == ([{(TOPIC, 0): 520 + MARK_AHEAD}], [False])
    assert track.marked == 10 + MARK_AHEAD  # the first one, confirmed meanwhile


def test_messages_are_handed_out_only_below_their_recorded_delivery_mark(
    subscription: KafkaSubscription,
) -> None:
    StubConsumer.marks[(TOPIC, 1)] = 5  # a previous owner's
    assign(subscription, 0, 1)
    marks: Any = subscription._marks
    track = subscription._tracks[(TOPIC, 0)]
    subscription._driver.options.timeout = 60  # no giving up on marks here
    subscription._accept([record(0, o) for o in range(10)])
    # the receiver waited for the confirmation of the mark requested while fetching
    assert where(subscription.receive(10, 0)) == [(0, o) for o in range(10)]
    assert track.marked == 10 + MARK_AHEAD
    subscription._accept([record(0, o) for o in range(10, 20 + MARK_AHEAD)])
    marks.failure = KafkaError(KafkaError._TRANSPORT)  # for the request in flight too
    below = subscription.receive(2 * MARK_AHEAD, 0)
    assert where(below) == [(0, o) for o in range(10, 10 + MARK_AHEAD)]
    # another partition, below its recorded mark, goes on while the first waits for its own
    subscription._accept([record(1, 0)])
    assert where(subscription.receive(10, 0)) == [(1, 0)]
    assert subscription.receive(10, 0) == []  # asked again, failed again
    assert track.requested == track.marked == 10 + MARK_AHEAD
    marks.failure = None
    rest = subscription.receive(10, 0)  # asked again, recorded
    assert where(rest) == [(0, o) for o in range(10 + MARK_AHEAD, 20 + MARK_AHEAD)]
    assert track.marked == 20 + 2 * MARK_AHEAD
    assert marks.waited.count(True) == 0


def test_a_mark_that_cannot_be_recorded_is_given_up_on_after_the_timeout(
    subscription: KafkaSubscription, caplog: pytest.LogCaptureFixture
) -> None:
    assign(subscription, 0)
    marks: Any = subscription._marks
    marks.failure = KafkaError(KafkaError._TRANSPORT)
    marks.refuse = True
    subscription._accept([record(0, 0)])  # its request fails (fixture: timeout 0)
    with caplog.at_level(logging.WARNING, logger="anyqueue.kafka"):
        assert where(subscription.receive(10, 0)) == [(0, 0)]
    assert "without a recorded delivery mark" in caplog.text
    assert marks.waited[-1] is True  # recording it was tried synchronously first
