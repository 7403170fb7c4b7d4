"""Failures against a real node: dropped links, broker restarts, blocked publishers, long
handlers. What must hold: nothing reported as sent that was not, acks of a dead channel never
land on the new one, counts stay exact, heartbeats flow while a handler runs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import anyqueue
from anyqueue_rabbitmq.testing import RabbitNode


def unique(name: str = "t") -> str:
    return f"fail{uuid.uuid4().hex[:10]}.{name}"


def receive_within(sub: anyqueue.Subscription, seconds: float) -> anyqueue.Message:
    """The next message, polling until `seconds` pass (a re-attach may be under way)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = sub.receive(timeout=0.5)
        if message is not None:
            return message
    raise AssertionError(f"no message within {seconds}s")


def generation(broker: anyqueue.Broker) -> int:
    """How many times this broker's connection has been opened."""
    return broker._driver._link.generation  # type: ignore[attr-defined, no-any-return]


@contextmanager
def memory_alarm(node: RabbitNode) -> Iterator[None]:
    """RabbitMQ blocks every publishing connection while its memory alarm is on."""
    node.ctl("set_vm_memory_high_watermark", "0")
    try:
        yield
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")


def test_stale_ack_never_lands_on_the_new_channel(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        broker.publish_batch(topic, [b"first", b"second"])
        sub = broker.subscribe(topic, "g", prefetch=2)
        receive_within(sub, 10).ack()
        old = receive_within(sub, 10)  # delivery tag 2 of the first channel, held
        rabbitmq_node.close_connection(broker._driver.connection_name)  # type: ignore[attr-defined]
        # on the new channel the broker redelivers it as tag 1, which the backend requeues with
        # its count raised; the copy arrives as tag 2: the same tag as the stale delivery
        new = receive_within(sub, 60)
        assert new.id == old.id and new.delivery_count == 2 and new.redelivered
        assert new.receipt.tag == old.receipt.tag
        old.ack()  # must be discarded: sent on the new channel it would remove `new`
        sub.close()  # `new` was never acked: it goes back
        with broker.subscribe(topic, "g") as again:
            back = receive_within(again, 30)
            assert back.id == old.id and back.delivery_count == 3
            back.ack()


def test_counts_stay_exact_across_repeated_drops(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"crashes its consumers")
        seen = []
        for _ in range(3):
            consumer = anyqueue.connect(rabbitmq_node.url)
            sub = consumer.subscribe(topic, "g", prefetch=1)
            seen.append(receive_within(sub, 30).delivery_count)
            rabbitmq_node.close_connection(consumer._driver.connection_name)  # type: ignore[attr-defined]
            consumer.close()
        with broker.subscribe(topic, "g") as sub:
            last = receive_within(sub, 30)
            last.ack()
        assert [*seen, last.delivery_count] == [1, 2, 3, 4]


def test_ephemeral_subscription_comes_back_after_a_drop(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker, broker.subscribe(topic) as sub:
        broker.publish(topic, b"before")
        assert receive_within(sub, 10).body == b"before"
        rabbitmq_node.close_connection(broker._driver.connection_name)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        got = None
        while got is None and time.monotonic() < deadline:
            broker.publish(topic, b"after")  # lost until the new exclusive queue is bound
            got = sub.receive(timeout=0.5)
        assert got is not None and got.body == b"after"
        assert generation(broker) == 2


def test_unconfirmed_publish_raises_connection_error(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url, operation_timeout=2.0) as broker:
        broker.declare(topic, "g")
        with memory_alarm(rabbitmq_node), pytest.raises(anyqueue.ConnectionError) as raised:
            broker.publish(topic, b"blocked")
        assert "2s" in str(raised.value)
        broker.publish(topic, b"fine again")


def test_publishing_through_a_restart_never_reports_a_lost_message(
    rabbitmq_node: RabbitNode,
) -> None:
    topic = unique()
    confirmed: list[str] = []
    failures: list[anyqueue.Error] = []
    restarted = threading.Event()
    with anyqueue.connect(rabbitmq_node.url, reconnect_timeout=120) as broker:
        broker.declare(topic, "g")

        def produce() -> None:
            after_restart = 0
            while after_restart < 20:
                try:
                    confirmed.append(broker.publish(topic, b"x"))
                except anyqueue.ConnectionError as err:
                    failures.append(err)
                if restarted.is_set():
                    after_restart += 1

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        deadline = time.monotonic() + 60
        while len(confirmed) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        rabbitmq_node.restart()
        restarted.set()
        producer.join(180)
        assert not producer.is_alive()
        with broker.subscribe(topic, "g", prefetch=100) as sub:
            delivered = set()
            deadline = time.monotonic() + 60
            while not set(confirmed) <= delivered and time.monotonic() < deadline:
                message = sub.receive(timeout=1)
                if message is not None:
                    delivered.add(message.id)
                    message.ack()
    assert set(confirmed) <= delivered, f"{len(set(confirmed) - delivered)} confirmed were lost"
    assert generation(broker) >= 2


def test_subscription_resumes_after_a_restart(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        with broker.subscribe(topic, "g") as sub:
            broker.publish(topic, b"before")
            receive_within(sub, 10).ack()
            rabbitmq_node.restart()
            broker.publish(topic, b"after")  # waits for the reconnect
            message = receive_within(sub, 60)
            assert message.body == b"after"
            message.ack()


def test_long_handler_keeps_its_connection(rabbitmq_node: RabbitNode) -> None:
    """A handler running over 3x the heartbeat interval must not lose the connection
    (pika#1104: a BlockingConnection would miss heartbeats and be closed by the broker)."""
    topic = unique()
    heartbeat = 2  # the broker gives up after two missed beats: 4 s here
    with anyqueue.connect(rabbitmq_node.url, heartbeat=heartbeat) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"slow work")
        done = threading.Event()

        def slow(message: anyqueue.Message) -> None:
            time.sleep(3.5 * heartbeat)
            done.set()

        with broker.consume(topic, slow, group="g"):
            assert done.wait(60)
        assert generation(broker) == 1, "the connection was lost while the handler ran"
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive(timeout=1) is None, "the ack did not arrive: it came back"


def test_unreachable_broker_is_a_connection_error() -> None:
    with socket_that_refuses() as port, pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(f"amqp://user:hunter2secret@127.0.0.1:{port}/", connect_timeout=2)
    assert "hunter2secret" not in str(raised.value)


def test_wrong_password_is_refused_without_echoing_it(rabbitmq_node: RabbitNode) -> None:
    url = rabbitmq_node.url.replace("guest:guest", "guest:not-the-Passw0rd")
    with pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(url)
    assert "not-the-Passw0rd" not in str(raised.value)
    assert "not-the-Passw0rd" not in repr(raised.value.__cause__)


@contextmanager
def socket_that_refuses() -> Iterator[int]:
    """A loopback port with nothing listening (bound, never listened on)."""
    import socket

    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield placeholder.getsockname()[1]
