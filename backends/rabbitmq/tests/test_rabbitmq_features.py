"""RabbitMQ-specific behaviour against a real node: the topology it creates, quorum queues,
direct reply-to, delayed requeues through wait queues, TLS, foreign publishers, threads."""

from __future__ import annotations

import threading
import time
import uuid

import pika
import pytest

import anyqueue
from anyqueue_rabbitmq.testing import RabbitNode
from anyqueue_rabbitmq.topology import group_queue


def unique(name: str = "t") -> str:
    return f"feat{uuid.uuid4().hex[:10]}.{name}"


def drain(sub: anyqueue.Subscription, idle: float = 1.5) -> list[anyqueue.Message]:
    """Everything that arrives until nothing comes for `idle` seconds (acked)."""
    got = []
    while (message := sub.receive(timeout=idle)) is not None:
        got.append(message)
        message.ack()
    return got


def queues(node: RabbitNode) -> dict[str, tuple[str, ...]]:
    """name -> (type, arguments) of every queue on the node."""
    listing = node.ctl("list_queues", "name", "type", "arguments", "--silent")
    rows = (line.split("\t") for line in listing.splitlines() if line.strip())
    return {row[0]: tuple(row[1:]) for row in rows}


def test_patterns_do_not_catch_dead_letters_but_dead_patterns_do(
    rabbitmq_node: RabbitNode,
) -> None:
    base = unique("logs")
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(f"{base}.#", "everything")
        broker.declare(f"{base}.#.dead", "all-dead")
        broker.declare("#", "whole-world")
        broker.publish(f"{base}.eu.error", b"live")
        broker.publish(f"{base}.eu.error.dead", b"dead")
        with broker.subscribe(f"{base}.#", "everything") as sub:
            assert [m.body for m in drain(sub)] == [b"live"]
        with broker.subscribe(f"{base}.#.dead", "all-dead") as sub:
            got = drain(sub)
            assert [(m.body, m.topic) for m in got] == [(b"dead", f"{base}.eu.error.dead")]
        with broker.subscribe("#", "whole-world") as sub:
            bodies = [m.body for m in drain(sub) if m.topic.startswith(base)]
            assert bodies == [b"live"]


def test_groups_are_durable_classic_queues_bound_to_a_topic_exchange(
    rabbitmq_node: RabbitNode,
) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "workers")
    queue = group_queue("anyqueue", topic, "workers")
    assert queues(rabbitmq_node)[queue][0] == "classic"
    bindings = rabbitmq_node.ctl("list_bindings", "source_name", "destination_name", "routing_key")
    assert f"anyqueue\t{queue}\t{topic}" in bindings
    exchanges = rabbitmq_node.ctl("list_exchanges", "name", "type", "durable", "--silent")
    assert "anyqueue\ttopic\ttrue" in exchanges and "anyqueue.dead\ttopic\ttrue" in exchanges


def test_quorum_groups_count_with_x_delivery_count(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url, queue_type="quorum") as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"q")
        with broker.subscribe(topic, "g") as sub:
            counts = []
            for _ in range(3):
                message = sub.receive(timeout=10)
                assert message is not None
                counts.append(message.delivery_count)
                message.nack()
            assert counts == [1, 2, 3]
            last = sub.receive(timeout=10)
            assert last is not None and last.delivery_count == 4
            last.nack(delay=0.2)  # a delayed requeue leaves the quorum queue: our header counts
            delayed = sub.receive(timeout=30)
            assert delayed is not None and delayed.delivery_count == 5
            delayed.ack()
    assert queues(rabbitmq_node)[group_queue("anyqueue", topic, "g")][0] == "quorum"


def test_switching_queue_type_of_an_existing_group_is_a_config_error(
    rabbitmq_node: RabbitNode,
) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
    with anyqueue.connect(rabbitmq_node.url, queue_type="quorum") as broker:
        with pytest.raises(anyqueue.ConfigError, match="queue_type"):
            broker.declare(topic, "g")
        broker.declare(topic, "other")  # the connection is still usable


def test_nack_delay_goes_through_a_ttl_wait_queue(rabbitmq_node: RabbitNode) -> None:
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"later", key="k", headers={"h": "v"})
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=10)
            assert message is not None
            nacked_at = time.monotonic()
            message.nack(delay=0.7)
            assert sub.receive(timeout=0.5) is None  # still waiting
            again = sub.receive(timeout=30)
            assert again is not None and time.monotonic() - nacked_at >= 0.7
            assert (again.id, again.key, again.headers, again.topic) == (
                message.id,
                "k",
                {"h": "v"},
                topic,
            )
            assert again.delivery_count == 2 and again.redelivered
            again.ack()
    wait = queues(rabbitmq_node)["anyqueue.wait.700"]
    assert "x-message-ttl" in wait[1] and "700" in wait[1]


def test_requests_use_direct_reply_to(rabbitmq_node: RabbitNode) -> None:
    topic = unique("rpc")
    seen_reply_to: list[str | None] = []

    def handler(message: anyqueue.Message) -> str:
        seen_reply_to.append(message.reply_to)
        return message.text.upper()

    with anyqueue.connect(rabbitmq_node.url) as broker, broker.serve(topic, handler):
        assert broker.request(topic, "hi", timeout=10).text == "HI"
    assert seen_reply_to[0] is not None
    assert seen_reply_to[0].startswith("amq.rabbitmq.reply-to.")
    assert not [name for name in queues(rabbitmq_node) if "reply" in name]


def test_foreign_amqp_publishers_are_understood(rabbitmq_node: RabbitNode) -> None:
    """A plain pika producer publishing to the exchange reaches an anyqueue group."""
    topic = unique()
    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_node.url))
        try:
            connection.channel().basic_publish(
                "anyqueue",
                topic,
                b"from pika",
                pika.BasicProperties(headers={"n": 42, "s": "text"}, content_type="text/plain"),
            )
        finally:
            connection.close()
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=10)
            assert message is not None
            assert (message.body, message.text, message.topic) == (b"from pika", "from pika", topic)
            assert message.headers == {"n": "42", "s": "text"}
            assert message.id and message.delivery_count == 1
            message.ack()


def test_many_threads_share_one_broker(rabbitmq_node: RabbitNode) -> None:
    topic, rpc = unique(), unique("rpc")
    errors: list[BaseException] = []
    published: list[str] = []
    lock = threading.Lock()
    with anyqueue.connect(rabbitmq_node.url) as broker, broker.serve(rpc, lambda m: m.body):
        broker.declare(topic, "g")

        def work(index: int) -> None:
            try:
                for i in range(20):
                    message_id = broker.publish(topic, f"{index}-{i}".encode())
                    with lock:
                        published.append(message_id)
                    body = f"req-{index}-{i}".encode()
                    assert broker.request(rpc, body, timeout=30).body == body
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[0]
        with broker.subscribe(topic, "g", prefetch=50) as sub:
            got = drain(sub)
        assert sorted(m.id for m in got) == sorted(published)


def test_amqps_verifies_the_server(rabbitmq_node: RabbitNode) -> None:
    url = rabbitmq_node.tls_url
    with anyqueue.connect(url, ca_file=rabbitmq_node.ca_file) as broker:
        topic = unique()
        broker.declare(topic, "g")
        broker.publish(topic, b"over tls")
        with broker.subscribe(topic, "g") as sub:
            message = sub.receive(timeout=10)
            assert message is not None and message.body == b"over tls"
            message.ack()
    with pytest.raises(anyqueue.ConnectionError):
        anyqueue.connect(url, connect_timeout=5)  # the test CA is not trusted by default
    by_address = url.replace("localhost", "127.0.0.1")
    with pytest.raises(anyqueue.ConnectionError):
        anyqueue.connect(by_address, ca_file=rabbitmq_node.ca_file, connect_timeout=5)
    with anyqueue.connect(by_address, verify=False) as unverified:
        unverified.declare(unique(), "g")


def test_password_never_shows(rabbitmq_node: RabbitNode) -> None:
    with anyqueue.connect(rabbitmq_node.url) as broker:
        assert "guest:guest" not in repr(broker) and "guest:guest" not in str(broker)
        assert "guest:guest" not in repr(broker._driver.url)


def test_ack_timeout_returns_a_message_while_its_handler_still_runs(
    rabbitmq_node: RabbitNode,
) -> None:
    """The I/O thread enforces the lease: the second worker thread gets the message again
    while the first is still busy with it, and the first one's late ack changes nothing."""
    topic = unique()
    handled: list[int] = []
    lock = threading.Lock()
    second_started = threading.Event()

    def handler(message: anyqueue.Message) -> None:
        if message.delivery_count == 1:
            second_started.wait(30)  # busy until the redelivery has reached the other thread
        else:
            second_started.set()
        with lock:
            handled.append(message.delivery_count)

    with anyqueue.connect(rabbitmq_node.url) as broker:
        broker.declare(topic, "g")
        broker.publish(topic, b"slow")
        worker = broker.consume(topic, handler, group="g", concurrency=2, ack_timeout=1.0)
        try:
            deadline = time.monotonic() + 60
            while len(handled) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            worker.stop()
        assert sorted(handled) == [1, 2]
        with broker.subscribe(topic, "g") as sub:
            assert sub.receive(timeout=1.5) is None, "acked after the redelivery: gone"
