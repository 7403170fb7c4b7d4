"""The conformance cases every backend runs: one class to subclass, gated by Capabilities.

Each test verifies one capability (its matrix row). A test whose capability the backend does
not claim checks that the feature is refused with NotSupported and reports UNCLAIMED; a test
that needs a harness hook the harness lacks reports UNVERIFIABLE. Nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import anyqueue
from anyqueue.subscription import DEAD_DELIVERY_COUNT, DEAD_ERROR, DEAD_REASON, DEAD_TOPIC

from .harness import Harness, harness_for
from .helpers import (
    Names,
    assert_nothing_more,
    drain,
    drop_connection,
    restart,
    run_threads,
    unclaimed,
    wait_for,
)

F = TypeVar("F", bound=Callable[..., Any])

#: the capability each case verifies, in matrix order
CAPABILITIES: list[str] = []


def verifies(capability: str) -> Callable[[F], F]:
    """Mark a test as the proof of `capability` (a row of the conformance matrix)."""

    def mark(test: F) -> F:
        test._anyqueue_capability = capability  # type: ignore[attr-defined]
        if capability not in CAPABILITIES:
            CAPABILITIES.append(capability)
        return test

    return mark


ODD_HEADERS = {
    "trace": "abc",
    "empty": "",
    "quotes": "\"double\" 'single' `back`",
    "punctuation": "a=b; c:d, e/f\\g | h&i ?#[]{}<>",
    "whitespace": " leading, trailing \t tab \n newline \r\n crlf ",
    "unicode": "héllo wörld — ☃ 🎉 日本語",
    "control": "nul\x00bell\x07",
    "long": "x" * 1000,
    "name with spaces": "v",
    "ünïcödé-näme": "v",
    "UPPER.lower_mixed-123": "v",
}


class ConformanceSuite:
    """Subclass this in your backend's tests and provide a class-scoped `harness` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, anyqueue_url: str) -> Harness:
        """Default: the plugin's harness for each --anyqueue-url (override in a subclass)."""
        return harness_for(anyqueue_url)

    @pytest.fixture
    def broker(self, harness: Harness) -> Iterator[anyqueue.Broker]:
        connected = harness.connect()
        try:
            yield connected
        finally:
            with contextlib.suppress(anyqueue.Error):  # e.g. the broker restarted under it
                connected.close()

    @pytest.fixture
    def names(self) -> Names:
        return Names()

    @pytest.fixture
    def caps(self, broker: anyqueue.Broker) -> anyqueue.Capabilities:
        return broker.capabilities

    # -- basics --------------------------------------------------------------------------------
    @verifies("round_trip")
    def test_round_trip(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names("orders")
        broker.declare(topic, "workers")
        count = harness.count(100)
        ids = [
            broker.publish(topic, f"message {i}".encode(), key=f"k{i % 7}") for i in range(count)
        ]
        assert len(set(ids)) == count, "message ids must be unique"
        with broker.subscribe(topic, "workers") as sub:
            got = drain(sub, count, harness.seconds(30))
            assert_nothing_more(sub, harness.seconds(0.5))
        assert sorted(m.id for m in got) == sorted(ids)
        by_id = {m.id: m for m in got}
        for i, message_id in enumerate(ids):
            message = by_id[message_id]
            assert message.body == f"message {i}".encode()
            assert message.topic == topic
            assert message.key == f"k{i % 7}"
            assert message.content_type == "application/octet-stream"
            assert message.delivery_count == 1
            assert message.redelivered is False

    @verifies("round_trip")
    def test_publish_batch(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        items: list[Any] = [
            b"a",
            "b",
            {"c": 1},
            anyqueue.Message(b"d", key="k", headers={"h": "1"}),
        ]
        ids = broker.publish_batch(topic, items)
        assert len(ids) == 4 and len(set(ids)) == 4
        with broker.subscribe(topic, "g") as sub:
            got = {m.id: m for m in drain(sub, 4, harness.seconds(20))}
        assert set(got) == set(ids)
        assert got[ids[0]].body == b"a"
        assert got[ids[1]].text == "b"
        assert got[ids[2]].json() == {"c": 1}
        assert (got[ids[3]].body, got[ids[3]].key, got[ids[3]].headers) == (b"d", "k", {"h": "1"})

    @verifies("bodies")
    def test_bodies(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        # (body, the bytes it is sent as, or None for JSON: compared decoded), content type
        cases: list[tuple[Any, bytes | None, str]] = [
            (b"", b"", "application/octet-stream"),
            (bytes(range(256)), bytes(range(256)), "application/octet-stream"),
            (
                b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\x00",
                b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\x00",
                "application/octet-stream",
            ),
            (bytearray(b"bytearray"), b"bytearray", "application/octet-stream"),
            (memoryview(b"view"), b"view", "application/octet-stream"),
            ("héllo 🎉", "héllo 🎉".encode(), "text/plain"),
            ({"action": "delete", "n": [1, 2.5, None, True]}, None, "application/json"),
            ([1, "two"], None, "application/json"),
        ]
        ids = [broker.publish(topic, body) for body, _, _ in cases]
        with broker.subscribe(topic, "g") as sub:
            got = {m.id: m for m in drain(sub, len(cases), harness.seconds(20))}
        assert set(got) == set(ids)
        for message_id, (body, expected, content_type) in zip(ids, cases):
            message = got[message_id]
            assert message.content_type == content_type
            if expected is None:
                assert message.json() == body
            else:
                assert message.body == expected
        with pytest.raises(TypeError):
            broker.publish(topic, 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            broker.publish(topic, object())  # type: ignore[arg-type]

    @verifies("max_body")
    def test_max_body(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        limit = broker.capabilities.max_body_bytes
        biggest = bytes(i % 251 for i in range(limit))
        with pytest.raises(anyqueue.MessageTooLarge):
            broker.publish(topic, biggest + b"x")
        with pytest.raises(anyqueue.MessageTooLarge):
            broker.publish_batch(topic, [b"small one", biggest + b"x"])
        message_id = broker.publish(topic, biggest)
        with broker.subscribe(topic, "g") as sub:
            got = drain(sub, 2, harness.seconds(30), idle=harness.seconds(3))
        assert [m.id for m in got] == [message_id], "nothing of a refused batch may be sent"
        assert got[0].body == biggest

    @verifies("headers")
    def test_headers(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"h", key="key with ünïcode ☃", headers=ODD_HEADERS)
        broker.publish(topic, b"none")
        with pytest.raises(TypeError):
            broker.publish(topic, b"x", headers={"n": 1})  # type: ignore[dict-item]
        with broker.subscribe(topic, "g") as sub:
            # matched by body: without global ordering the two may arrive either way round
            by_body = {m.body: m for m in drain(sub, 2, harness.seconds(20))}
        first, second = by_body[b"h"], by_body[b"none"]
        assert first.headers == ODD_HEADERS
        assert first.key == "key with ünïcode ☃"
        assert second.headers == {} and second.key is None

    @verifies("topic_isolation")
    def test_topic_isolation(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topics = [names("a"), names("ab"), names("a.b"), names("A")]
        for topic in topics:
            broker.declare(topic, "g")
        for topic in topics:
            broker.publish(topic, topic.encode())
        for topic in topics:
            with broker.subscribe(topic, "g") as sub:
                got = drain(sub, 2, harness.seconds(10), idle=harness.seconds(1.5))
            assert [m.body for m in got] == [topic.encode()], f"{topic} got {got}"

    # -- ordering ------------------------------------------------------------------------------
    @verifies("ordering.global")
    def test_global_order(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        if broker.capabilities.ordering != "global":
            unclaimed("global ordering")
        topic = names()
        broker.declare(topic, "g")
        count = harness.count(1000)
        expected = [str(i).encode() for i in range(count)]
        for start in range(0, count, 100):
            chunk = expected[start : start + 100]
            broker.publish(topic, chunk[0])
            broker.publish_batch(topic, chunk[1:])
        with broker.subscribe(topic, "g", prefetch=10) as sub:
            got = drain(sub, count, harness.seconds(60))
        assert [m.body for m in got] == expected

    @verifies("ordering.per_key")
    def test_per_key_order(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        if broker.capabilities.ordering != "per_key":
            unclaimed("per-key ordering across competing consumers")
        topic = names()
        broker.declare(topic, "g")
        count, keys = harness.count(1000), 16
        lock = threading.Lock()
        seen: list[tuple[str, int]] = []  # (key, sequence) of first deliveries, in receive order
        first_ids: set[str] = set()
        subs = [broker.subscribe(topic, "g", prefetch=20) for _ in range(3)]
        stop = threading.Event()

        def consume(sub: anyqueue.Subscription) -> None:
            while not stop.is_set():
                message = sub.receive(timeout=0.2)
                if message is None:
                    continue
                with lock:
                    if message.id not in first_ids:
                        first_ids.add(message.id)
                        key, seq = message.text.split(":")
                        seen.append((key, int(seq)))
                message.ack()

        threads = [threading.Thread(target=consume, args=(s,), daemon=True) for s in subs]
        for thread in threads:
            thread.start()
        try:
            batch = [
                anyqueue.Message(f"k{i % keys}:{i}".encode(), key=f"k{i % keys}")
                for i in range(count)
            ]
            for start in range(0, count, 50):
                broker.publish_batch(topic, batch[start : start + 50])
            wait_for(lambda: len(first_ids) >= count, harness.seconds(120), f"{count} messages")
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            for sub in subs:
                sub.close()
        per_key: dict[str, list[int]] = defaultdict(list)
        for key, seq in seen:
            per_key[key].append(seq)
        for key, seqs in per_key.items():
            assert seqs == sorted(seqs), f"key {key} arrived out of order: {seqs[:20]}..."

    # -- consumers -----------------------------------------------------------------------------
    @verifies("prefetch")
    def test_prefetch_holds_back(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"1")
        broker.publish(topic, b"2")
        with broker.subscribe(topic, "g", prefetch=1) as sub:
            first = sub.receive(timeout=harness.seconds(10))
            assert first is not None
            assert sub.receive(timeout=harness.seconds(1)) is None, "prefetch=1 must hold back"
            first.ack()
            second = sub.receive(timeout=harness.seconds(10))
            assert second is not None and {first.body, second.body} == {b"1", b"2"}
            second.ack()

    @verifies("prefetch")
    def test_receive_waits_while_full_then_wakes(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish_batch(topic, [b"1", b"2"])
        with broker.subscribe(topic, "g", prefetch=1) as sub:
            first = sub.receive(timeout=harness.seconds(10))
            assert first is not None
            result: list[anyqueue.Message | None] = []
            waiter = threading.Thread(
                target=lambda: result.append(sub.receive(harness.seconds(20)))
            )
            waiter.start()
            first.ack()  # frees the slot: the blocked receive gets the second message
            waiter.join(harness.seconds(25))
            assert result and result[0] is not None and result[0].body != first.body
            result[0].ack()

    @verifies("competing_consumers")
    def test_competing_consumers(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        count = harness.count(300)
        received: list[tuple[int, str]] = []
        lock = threading.Lock()
        subs = [broker.subscribe(topic, "g", prefetch=5) for _ in range(3)]
        done = threading.Event()

        def consume(index: int, sub: anyqueue.Subscription) -> None:
            while not done.is_set():
                message = sub.receive(timeout=0.2)
                if message is None:
                    continue
                with lock:
                    received.append((index, message.id))
                time.sleep(0.002)  # simulated work, so one member cannot take everything
                message.ack()

        threads = [
            threading.Thread(target=consume, args=(i, s), daemon=True) for i, s in enumerate(subs)
        ]
        for thread in threads:
            thread.start()
        try:
            # keyed: brokers with per-key order (Kafka partitions, SQS FIFO message groups) split
            # the load across keys, never inside one key
            batch = [anyqueue.Message(str(i).encode(), key=f"k{i % 16}") for i in range(count)]
            ids = set(broker.publish_batch(topic, batch))
            wait_for(lambda: {m for _, m in received} >= ids, harness.seconds(120), "all messages")
        finally:
            done.set()
            for thread in threads:
                thread.join(5)
            for sub in subs:
                sub.close()
        per_member = Counter(index for index, _ in received)
        assert len(per_member) >= 2, f"the load was not split: {dict(per_member)}"
        duplicates = len(received) - len({m for _, m in received})
        bound = math.ceil(broker.capabilities.duplicate_fraction * count)
        assert duplicates <= bound, f"{duplicates} duplicate deliveries (bound {bound})"

    @verifies("fan_out")
    def test_two_groups_each_get_everything(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "billing")
        broker.declare(topic, "audit")
        count = harness.count(50)
        ids = set(broker.publish_batch(topic, [str(i).encode() for i in range(count)]))
        for group in ("billing", "audit"):
            with broker.subscribe(topic, group) as sub:
                got = drain(sub, count, harness.seconds(30))
            assert {m.id for m in got} == ids, f"group {group} missed messages"

    @verifies("ephemeral")
    def test_ephemeral_sees_only_later(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        if broker.capabilities.replays_history:
            pytest.skip("UNCLAIMED: with replays_history an ephemeral group starts at the end")
        topic = names()
        broker.publish(topic, b"before")
        with broker.subscribe(topic) as sub:
            broker.publish(topic, b"after")
            got = drain(sub, 2, harness.seconds(20), idle=harness.seconds(2))
            assert [m.body for m in got] == [b"after"]
        with broker.subscribe(topic) as again:
            assert again.receive(timeout=harness.seconds(1)) is None, "ephemeral groups must vanish"

    @verifies("ephemeral")
    def test_ephemeral_subscriptions_fan_out(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        with broker.subscribe(topic) as one, broker.subscribe(topic) as two:
            broker.publish(topic, b"news")
            for sub in (one, two):
                got = drain(sub, 1, harness.seconds(20))
                assert [m.body for m in got] == [b"news"]

    @verifies("no_group_not_kept")
    def test_no_group_not_kept(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        if broker.capabilities.replays_history:
            unclaimed("dropping messages published before any group (it replays history)")
        topic = names()
        broker.publish(topic, b"nobody listens")
        broker.declare(topic, "late")
        broker.publish(topic, b"kept")
        with broker.subscribe(topic, "late") as sub:
            got = drain(sub, 2, harness.seconds(20), idle=harness.seconds(2))
        assert [m.body for m in got] == [b"kept"]

    @verifies("replays_history")
    def test_replays_history(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        if not broker.capabilities.replays_history:
            unclaimed("replays_history")
        topic = names()
        broker.declare(topic, "first")
        broker.publish(topic, b"old")
        broker.declare(topic, "newcomer")
        with broker.subscribe(topic, "newcomer") as sub:
            got = drain(sub, 1, harness.seconds(30))
        assert [m.body for m in got] == [b"old"]

    @verifies("wildcards")
    def test_wildcards(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        base = names("logs")
        if not broker.capabilities.wildcards:
            with pytest.raises(anyqueue.NotSupported):
                broker.subscribe(f"{base}.*.error")
            with pytest.raises(anyqueue.NotSupported):
                broker.declare(f"{base}.#", "g")
            unclaimed("wildcards")
        broker.declare(f"{base}.*.error", "errors")
        broker.declare(f"{base}.#", "all")
        broker.declare(f"{base}.*.dead", "dead")
        published = {
            "eu.error": True,  # (matches *.error)
            "us.error": True,
            "eu.warn": False,
            "eu.x.error": False,
            "error": False,
        }
        for suffix in published:
            broker.publish(f"{base}.{suffix}", suffix.encode())
        broker.publish(base, b"bare")
        broker.publish(f"{base}.eu.dead", b"dead letter")
        broker.publish(names("other") + ".eu.error", b"other")
        expectations = {
            "errors": {s.encode() for s, hit in published.items() if hit},
            "all": {s.encode() for s in published} | {b"bare"},
            "dead": {b"dead letter"},
        }
        for group, expected in expectations.items():
            pattern = {"errors": f"{base}.*.error", "all": f"{base}.#", "dead": f"{base}.*.dead"}
            with broker.subscribe(pattern[group], group) as sub:
                got = drain(sub, len(expected) + 1, harness.seconds(20), idle=harness.seconds(2))
            assert {m.body for m in got} == expected, f"pattern {pattern[group]}"
            assert len(got) == len(expected)
        for message in got:
            assert message.topic == f"{base}.eu.dead"  # the concrete topic, not the pattern

    # -- settling ------------------------------------------------------------------------------
    @verifies("ack")
    def test_ack_removes(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"once")
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=harness.seconds(10))
            assert message is not None
            message.ack()
            message.ack()  # a second settle does nothing
            message.nack()
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive(timeout=harness.seconds(2)) is None

    @verifies("ack")
    def test_batch_receive_and_ack(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        sent = set(broker.publish_batch(topic, [f"m{n}".encode() for n in range(25)]))
        got: list[str] = []
        with broker.subscribe(topic, "g", prefetch=10) as sub:
            small = sub.receive_batch(3, timeout=harness.seconds(10))
            assert 1 <= len(small) <= 3, f"receive_batch(3) gave {len(small)}"
            got += [m.id for m in small]
            held = list(small)
            deadline = time.monotonic() + harness.seconds(30)
            while len(got) < len(sent) and time.monotonic() < deadline:
                batch = sub.receive_batch(timeout=harness.seconds(2))
                assert len(held) + len(batch) <= 10, "a batch went past prefetch"
                got += [m.id for m in batch]
                held += batch
                if len(held) == 10:
                    assert sub.receive_batch(timeout=harness.seconds(0.5)) == [], (
                        "prefetch=10 must hold back while 10 are unsettled"
                    )
                held[0].ack()  # one by one and all at once mix
                sub.ack(held)
                sub.ack(held)  # settling twice does nothing
                held = []
        assert sorted(got) == sorted(sent), "every message once"
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive_batch(timeout=harness.seconds(2)) == [], "acked messages came back"

    @verifies("nack")
    def test_nack_requeues(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"again", headers={"h": "v"}, key="k")
        with broker.subscribe(topic, "g") as sub:
            first = sub.receive(timeout=harness.seconds(10))
            assert first is not None
            if not broker.capabilities.nack:
                with pytest.raises(anyqueue.NotSupported):
                    first.nack()
                unclaimed("nack(requeue=True)")
            first.nack()
            second = sub.receive(timeout=harness.seconds(20))
            assert second is not None
            assert (second.id, second.body, second.headers, second.key) == (
                first.id,
                b"again",
                {"h": "v"},
                "k",
            )
            assert second.redelivered and second.delivery_count == 2
            second.ack()

    @verifies("delay")
    def test_nack_delay(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"later")
        delay = harness.seconds(1.5)
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=harness.seconds(10))
            assert message is not None
            if not broker.capabilities.delay:
                with pytest.raises(anyqueue.NotSupported):
                    message.nack(delay=delay)
                unclaimed("nack(delay=...)")
            nacked_at = time.monotonic()
            message.nack(delay=delay)
            again = sub.receive(timeout=delay + harness.seconds(30))
            arrived = time.monotonic() - nacked_at
            assert again is not None and again.id == message.id
            assert arrived >= delay - 0.01, f"arrived after {arrived:.3f}s, delay was {delay}s"
            again.ack()

    @verifies("delivery_count")
    def test_delivery_count(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"count me")
        with broker.subscribe(topic, "g") as sub:
            first = sub.receive(timeout=harness.seconds(10))
            assert first is not None and first.delivery_count == 1 and not first.redelivered
        # closed while holding it: back to the group, counted
        with broker.subscribe(topic, "g") as sub:
            second = sub.receive(timeout=harness.seconds(30))
            assert second is not None and second.id == first.id
            assert second.delivery_count == 2 and second.redelivered
            if broker.capabilities.nack:
                second.nack()
                third = sub.receive(timeout=harness.seconds(30))
                assert third is not None and third.delivery_count == 3
                third.ack()
            else:
                second.ack()

    @verifies("dead_letter")
    def test_nack_without_requeue_dead_letters(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        broker.declare(topic + ".dead", "dead")
        message_id = broker.publish(topic, b"poison", key="k", headers={"trace": "t1"})
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=harness.seconds(10))
            assert message is not None
            message.nack(requeue=False)
            assert_nothing_more(sub, harness.seconds(1))
        with broker.subscribe(topic + ".dead", "dead") as dead:
            got = drain(dead, 1, harness.seconds(20))
        assert len(got) == 1
        letter = got[0]
        assert (letter.body, letter.key, letter.id) == (b"poison", "k", message_id)
        assert letter.headers["trace"] == "t1"
        assert letter.headers[DEAD_REASON] == "rejected"
        assert letter.headers[DEAD_TOPIC] == topic
        assert letter.topic == topic + ".dead"

    @verifies("dead_letter")
    def test_max_deliveries_dead_letters(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        message_id = broker.publish(topic, b"\x00poison\xff", key="k", headers={"trace": "t2"})
        calls: list[int] = []

        def always_fails(message: anyqueue.Message) -> None:
            calls.append(message.delivery_count)
            raise ValueError("cannot handle this")

        worker = broker.consume(topic, always_fails, group="g", max_deliveries=3, retry_delay=0.05)
        try:
            with broker.subscribe(topic + ".dead", "dead") as dead:
                got = drain(dead, 1, harness.seconds(60))
        finally:
            worker.stop()
        expected_calls = [1, 2, 3] if broker.capabilities.nack else [1]
        assert calls == expected_calls
        assert len(got) == 1
        letter = got[0]
        assert (letter.body, letter.key, letter.id) == (b"\x00poison\xff", "k", message_id)
        assert letter.headers["trace"] == "t2"
        assert letter.headers[DEAD_REASON] == "max-deliveries"
        assert letter.headers[DEAD_ERROR] == "ValueError: cannot handle this"
        assert letter.headers[DEAD_DELIVERY_COUNT] == str(expected_calls[-1])

    # -- redelivery ----------------------------------------------------------------------------
    @verifies("redelivery_on_close")
    def test_close_returns_unacked(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        ids = set(broker.publish_batch(topic, [b"1", b"2", b"3"]))
        sub = broker.subscribe(topic, "g", prefetch=3)
        held = drain(sub, 2, harness.seconds(20), ack=False)
        assert len(held) == 2
        sub.close()
        for message in held:
            message.ack()  # settling after close does nothing: they are back in the group
        with broker.subscribe(topic, "g") as again:
            got = drain(again, 3, harness.seconds(30))
        assert {m.id for m in got} == ids
        redelivered = [m for m in got if m.id in {h.id for h in held}]
        assert all(m.redelivered and m.delivery_count >= 2 for m in redelivered)

    @verifies("redelivery_on_close")
    def test_worker_stop_loses_nothing(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        count = harness.count(40)
        ids = set(broker.publish_batch(topic, [str(i).encode() for i in range(count)]))
        handled: list[str] = []
        started = threading.Event()

        def slow(message: anyqueue.Message) -> None:
            started.set()
            time.sleep(0.02)
            handled.append(message.id)

        worker = broker.consume(topic, slow, group="g", concurrency=2, prefetch=4)
        started.wait(harness.seconds(30))
        worker.stop()
        assert len(handled) < count, "stop() should have interrupted the run"
        with broker.subscribe(topic, "g") as sub:
            rest = drain(sub, count, harness.seconds(30), idle=harness.seconds(3))
        assert set(handled) | {m.id for m in rest} == ids
        assert not set(handled) & {m.id for m in rest}, "acked messages came back"

    @verifies("redelivery_on_drop")
    def test_dropped_connection_redelivers(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        message_id = broker.publish(topic, b"in flight")
        consumer = harness.connect()
        try:
            sub = consumer.subscribe(topic, "g")
            held = sub.receive(timeout=harness.seconds(10))
            assert held is not None and held.id == message_id
            drop_connection(harness, consumer)
            with contextlib.suppress(anyqueue.Error):
                held.ack()  # an ack for a dead connection is discarded, never applied
            with broker.subscribe(topic, "g") as other:
                found: list[anyqueue.Message] = []

                def redelivered() -> bool:
                    for source in (other, sub):
                        message = source.receive(timeout=0.2)
                        if message is not None:
                            found.append(message)
                            message.ack()
                    return bool(found)

                wait_for(redelivered, harness.seconds(60), "the redelivery")
                assert found[0].id == message_id and found[0].delivery_count >= 2
                assert found[0].redelivered
        finally:
            consumer.close()

    @verifies("ack_timeout")
    def test_ack_timeout_redelivers(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names()
        broker.declare(topic, "g")
        timeout = harness.seconds(1.0)
        if not broker.capabilities.ack_timeout:
            with pytest.raises(anyqueue.NotSupported):
                broker.subscribe(topic, "g", ack_timeout=timeout)
            unclaimed("ack_timeout")
        broker.publish(topic, b"slow")
        with broker.subscribe(topic, "g", prefetch=2, ack_timeout=timeout) as sub:
            first = sub.receive(timeout=harness.seconds(10))
            assert first is not None
            second = sub.receive(timeout=timeout + harness.seconds(30))
            assert second is not None and second.id == first.id
            assert second.delivery_count == 2 and second.redelivered
            first.ack()  # the expired lease's ack is ignored...
            second.ack()  # ...the current one removes it
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive(timeout=timeout + harness.seconds(1)) is None

    @verifies("durable")
    def test_durable_restart(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        if not broker.capabilities.durable:
            unclaimed("durability across a broker restart")
        topic = names()
        broker.declare(topic, "g")
        count = harness.count(100)
        ids = set(broker.publish_batch(topic, [str(i).encode() for i in range(count)]))
        restart(harness)
        with harness.connect() as after:
            with after.subscribe(topic, "g") as sub:
                got = drain(sub, count, harness.seconds(60))
            assert {m.id for m in got} == ids
            after.publish(topic, b"still works")

    # -- request / reply -----------------------------------------------------------------------
    @verifies("request_reply")
    def test_concurrent_requests_never_cross(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names("rpc")

        def handler(message: anyqueue.Message) -> bytes:
            return message.body[::-1] + message.headers.get("tag", "").encode()

        with broker.serve(topic, handler, concurrency=4):
            results: dict[int, bytes] = {}

            def call(i: int) -> Callable[[], None]:
                def run() -> None:
                    reply = broker.request(
                        topic,
                        f"req-{i}".encode(),
                        timeout=harness.seconds(30),
                        headers={"tag": str(i)},
                    )
                    results[i] = reply.body

                return run

            run_threads([call(i) for i in range(50)], harness.seconds(60))
        assert results == {i: f"req-{i}".encode()[::-1] + str(i).encode() for i in range(50)}

    @verifies("request_reply")
    def test_request_timeout_and_remote_error(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        silent = names("nobody")
        started = time.monotonic()
        with pytest.raises(anyqueue.Timeout):
            broker.request(silent, b"hello?", timeout=0.5)
        assert time.monotonic() - started >= 0.45

        def refuse(message: anyqueue.Message) -> bytes:
            raise ValueError(f"bad input {message.text}")

        topic = names("rpc")
        with broker.serve(topic, refuse), pytest.raises(anyqueue.RemoteError) as raised:
            broker.request(topic, "42", timeout=harness.seconds(30))
        assert raised.value.type == "ValueError"
        assert raised.value.message == "bad input 42"
        assert str(raised.value) == "ValueError: bad input 42"

    @verifies("request_reply")
    def test_request_waits_for_first_server(
        self, broker: anyqueue.Broker, harness: Harness, names: Names
    ) -> None:
        topic = names("rpc")
        replies: list[bytes] = []
        caller = threading.Thread(
            target=lambda: replies.append(
                broker.request(topic, b"early", timeout=harness.seconds(30)).body
            )
        )
        caller.start()
        wait_for(
            lambda: (topic, "anyqueue.rpc") in broker._declared, harness.seconds(10), "the request"
        )
        with harness.connect() as server_side, server_side.serve(topic, lambda m: m.body.upper()):
            caller.join(harness.seconds(40))
        assert replies == [b"EARLY"]

    # -- errors and lifecycle ------------------------------------------------------------------
    @verifies("closed")
    def test_closed(self, harness: Harness, names: Names) -> None:
        broker = harness.connect()
        topic = names()
        broker.declare(topic, "g")
        broker.publish(topic, b"held")
        sub = broker.subscribe(topic, "g")
        blocked = broker.subscribe(names("idle"))
        result: list[Any] = ["not returned"]
        waiter = threading.Thread(target=lambda: result.__setitem__(0, blocked.receive()))
        waiter.start()
        held = sub.receive(timeout=harness.seconds(10))
        assert held is not None
        blocked.close()
        waiter.join(harness.seconds(10))
        assert result == [None], "close() must wake a blocked receive()"
        assert list(blocked) == []
        with pytest.raises(anyqueue.Closed):
            blocked.receive(timeout=0)
        broker.close()
        broker.close()
        held.ack()  # its subscription closed with the broker: does nothing
        for call in (
            lambda: broker.publish(topic, b"x"),
            lambda: broker.publish_batch(topic, [b"x"]),
            lambda: broker.subscribe(topic, "g"),
            lambda: broker.declare(topic, "g"),
            lambda: broker.request(topic, b"x", timeout=1),
            lambda: sub.receive(timeout=0),
        ):
            with pytest.raises(anyqueue.Closed):
                call()
        with harness.connect() as again, again.subscribe(topic, "g") as sub2:
            back = drain(sub2, 1, harness.seconds(30))
            assert [m.body for m in back] == [b"held"]

    @verifies("invalid_name")
    def test_invalid_names(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        bad = ["", "has space", "a/b", "-leading", ".leading", "x" * 201, "ünï", "a*b", "tab\t"]
        for name in bad:
            with pytest.raises(anyqueue.InvalidName):
                broker.publish(name, b"x")
            with pytest.raises(anyqueue.InvalidName):
                broker.declare(names(), name)
        with pytest.raises(anyqueue.InvalidName):
            broker.publish(names() + ".*", b"a pattern is not a topic")
        with pytest.raises(anyqueue.InvalidName):
            broker.subscribe(names(), group="bad group")
        # the longest portable topic and its dead-letter topic are valid and distinct
        longest = (names() + "." + "x" * 200)[:200]
        sibling = longest[:-1] + "y"
        for topic in (longest, longest + ".dead", sibling):
            broker.declare(topic, "g")
        for topic in (longest, longest + ".dead", sibling):
            broker.publish(topic, topic.encode())
        for topic in (longest, longest + ".dead", sibling):
            with broker.subscribe(topic, "g") as sub:
                got = drain(sub, 2, harness.seconds(20), idle=harness.seconds(1.5))
            assert [m.body for m in got] == [topic.encode()]

    # -- under load ----------------------------------------------------------------------------
    @verifies("total_queue")
    def test_total_queue(self, broker: anyqueue.Broker, harness: Harness, names: Names) -> None:
        topic = names()
        broker.declare(topic, "g")
        per_producer = harness.count(400)
        confirmed: set[str] = set()
        delivered: list[str] = []
        lock = threading.Lock()
        producers_done = threading.Event()

        def produce(index: int) -> None:
            with harness.connect() as producer:
                for start in range(0, per_producer, 20):
                    size = min(20, per_producer - start)
                    if start % 40:
                        ids = producer.publish_batch(
                            topic, [f"{index}-{start + i}".encode() for i in range(size)]
                        )
                    else:
                        ids = [
                            producer.publish(topic, f"{index}-{start + i}".encode())
                            for i in range(size)
                        ]
                    with lock:
                        confirmed.update(ids)

        def consume() -> None:
            with harness.connect() as consumer, consumer.subscribe(topic, "g", prefetch=10) as sub:
                idle_since = time.monotonic()
                while True:
                    message = sub.receive(timeout=0.2)
                    if message is not None:
                        with lock:
                            delivered.append(message.id)
                        message.ack()
                        idle_since = time.monotonic()
                    elif (
                        producers_done.is_set()
                        and time.monotonic() - idle_since > harness.seconds(3)
                    ):
                        return

        consumers = [threading.Thread(target=consume, daemon=True) for _ in range(3)]
        for thread in consumers:
            thread.start()
        run_threads([functools.partial(produce, i) for i in range(3)], harness.seconds(300))
        producers_done.set()
        for thread in consumers:
            thread.join(harness.seconds(300))
        assert not any(t.is_alive() for t in consumers)
        lost = confirmed - set(delivered)
        unexpected = set(delivered) - confirmed
        duplicates = len(delivered) - len(set(delivered))
        bound = math.ceil(broker.capabilities.duplicate_fraction * len(confirmed))
        assert not lost, f"{len(lost)} confirmed messages were lost"
        assert not unexpected, f"{len(unexpected)} unexpected messages"
        assert duplicates <= bound, f"{duplicates} duplicates (declared bound {bound})"
