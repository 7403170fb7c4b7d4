"""The six RabbitMQ tutorials (https://www.rabbitmq.com/tutorials), written once with anyqueue and
run unchanged on the in-process broker and on a real RabbitMQ node: only the URL differs."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

import anyqueue
from anyqueue_rabbitmq.testing import RabbitNode


@pytest.fixture(params=["memory", "amqp"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield f"memory://tutorials-{uuid.uuid4().hex[:8]}"
    else:
        node: RabbitNode = request.getfixturevalue("rabbitmq_node")
        yield node.url


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def collect(sub: anyqueue.Subscription, count: int, timeout: float = 20) -> list[str]:
    """The texts of `count` messages (acked), or fewer if `timeout` passes."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while len(texts) < count and time.monotonic() < deadline:
        message = sub.receive(timeout=0.5)
        if message is not None:
            texts.append(message.text)
            message.ack()
    return texts


def test_1_hello_world(url: str) -> None:
    queue = f"hello-{run_id()}"
    with anyqueue.connect(url) as broker:
        broker.declare(queue, "hello")  # like queue_declare: kept until someone reads it
        broker.publish(queue, "Hello World!")
        with broker.subscribe(queue, "hello") as sub:
            assert collect(sub, 1) == ["Hello World!"]


def test_2_work_queues(url: str) -> None:
    task_queue = f"task_queue-{run_id()}"
    done: list[str] = []
    lock = threading.Lock()

    def callback(message: anyqueue.Message) -> None:
        time.sleep(0.01 * message.text.count("."))  # a dot is a second of work in the tutorial
        with lock:
            done.append(message.text)

    tasks = [f"task {i}" + "." * (i % 4) for i in range(12)]
    with anyqueue.connect(url) as broker:
        broker.declare(task_queue, "workers")
        workers = [
            broker.consume(task_queue, callback, group="workers", prefetch=1) for _ in range(2)
        ]
        try:
            broker.publish_batch(task_queue, tasks)  # durable, acked only after the work
            deadline = time.monotonic() + 60
            while len(done) < len(tasks) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            for worker in workers:
                worker.stop()
    assert Counter(done) == Counter(tasks)


def test_3_publish_subscribe(url: str) -> None:
    logs = f"logs-{run_id()}"
    # each receiver gets its own exclusive queue: fan-out of every log line
    with (
        anyqueue.connect(url) as broker,
        broker.subscribe(logs) as first,
        broker.subscribe(logs) as second,
    ):
        for line in ("info: one", "warning: two"):
            broker.publish(logs, line)
        assert collect(first, 2) == ["info: one", "warning: two"]
        assert collect(second, 2) == ["info: one", "warning: two"]


def test_4_routing(url: str) -> None:
    direct_logs = f"direct_logs-{run_id()}"
    with anyqueue.connect(url) as broker:
        to_disk = broker.subscribe(f"{direct_logs}.error")
        to_screen = [broker.subscribe(f"{direct_logs}.{s}") for s in ("info", "warning", "error")]
        try:
            for severity in ("info", "warning", "error"):
                broker.publish(f"{direct_logs}.{severity}", f"a {severity} message")
            assert collect(to_disk, 1) == ["a error message"]
            screen = [text for sub in to_screen for text in collect(sub, 1)]
            assert screen == ["a info message", "a warning message", "a error message"]
        finally:
            for sub in (to_disk, *to_screen):
                sub.close()


def test_5_topics(url: str) -> None:
    topic_logs = f"topic_logs-{run_id()}"
    bindings = {"all": "#", "kern": "kern.*", "critical": "*.critical"}
    with anyqueue.connect(url) as broker:
        subs = {name: broker.subscribe(f"{topic_logs}.{key}") for name, key in bindings.items()}
        try:
            for routing_key in ("kern.critical", "kern.info", "cron.critical", "cron.info"):
                broker.publish(f"{topic_logs}.{routing_key}", routing_key)
            got = {name: sorted(collect(sub, 4, timeout=3)) for name, sub in subs.items()}
        finally:
            for sub in subs.values():
                sub.close()
    assert got == {
        "all": ["cron.critical", "cron.info", "kern.critical", "kern.info"],
        "kern": ["kern.critical", "kern.info"],
        "critical": ["cron.critical", "kern.critical"],
    }


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_6_rpc(url: str) -> None:
    rpc_queue = f"rpc_queue-{run_id()}"
    with (
        anyqueue.connect(url) as broker,
        broker.serve(rpc_queue, lambda request: str(fib(int(request.text)))),
        anyqueue.connect(url) as client,
    ):
        assert client.request(rpc_queue, "30", timeout=30).text == "832040"
        with pytest.raises(anyqueue.RemoteError) as raised:
            client.request(rpc_queue, "not a number", timeout=30)
        assert raised.value.type == "ValueError"
