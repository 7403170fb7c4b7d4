"""The portable Broker on memory://: defaults, isolation, threads, errors, workers, RPC edges."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

import anyqueue
from anyqueue.config import BrokerURL
from anyqueue.memory.driver import MemoryDriver, MemoryOptions
from anyqueue.plugins import registry


@pytest.fixture
def broker() -> Iterator[anyqueue.Broker]:
    with anyqueue.connect(f"memory://{uuid.uuid4().hex}") as connected:
        yield connected


def test_default_url_is_env_then_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYQUEUE_URL", raising=False)
    with anyqueue.connect() as broker:
        assert broker.backend == "memory" and broker.url == "memory://"
    monkeypatch.setenv("ANYQUEUE_URL", "memory://from-env")
    with anyqueue.connect() as broker:
        assert broker.url == "memory://from-env"


def test_bad_memory_urls_and_options() -> None:
    with pytest.raises(anyqueue.ConfigError) as raised:
        anyqueue.connect("memory://user:hunter2@name")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(anyqueue.ConfigError, match="unknown option 'bogus'"):
        anyqueue.connect("memory://?bogus=1")


def test_named_namespaces_are_separate_and_shared_by_name() -> None:
    name = uuid.uuid4().hex
    with (
        anyqueue.connect(f"memory://{name}") as a,
        anyqueue.connect(f"memory://{name}") as b,
        anyqueue.connect(f"memory://{name}-other") as other,
    ):
        for broker in (a, other):
            broker.declare("t", "g")
        a.publish("t", b"shared")
        with b.subscribe("t", "g") as sub:
            message = sub.receive(timeout=2)
            assert message is not None and message.body == b"shared"
            message.ack()
        with other.subscribe("t", "g") as sub:
            assert sub.receive(timeout=0.2) is None


def test_publish_from_many_threads(broker: anyqueue.Broker) -> None:
    broker.declare("t", "g")
    ids: list[str] = []
    lock = threading.Lock()

    def produce() -> None:
        mine = [broker.publish("t", b"x") for _ in range(500)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with broker.subscribe("t", "g", prefetch=100) as sub:
        got = []
        while (message := sub.receive(timeout=0.5)) is not None:
            got.append(message.id)
            message.ack()
    assert sorted(got) == sorted(ids) and len(set(ids)) == 4000


def test_nack_arguments_are_checked(broker: anyqueue.Broker) -> None:
    broker.declare("t", "g")
    broker.publish("t", b"x")
    with broker.subscribe("t", "g") as sub:
        message = sub.receive(timeout=1)
        assert message is not None
        with pytest.raises(anyqueue.ConfigError, match=">= 0"):
            message.nack(delay=-1)
        with pytest.raises(anyqueue.ConfigError, match="requeue=True"):
            message.nack(requeue=False, delay=1)
        message.ack()  # the refused nacks left it unsettled


def test_subscribe_arguments_are_checked(broker: anyqueue.Broker) -> None:
    with pytest.raises(anyqueue.ConfigError, match="prefetch"):
        broker.subscribe("t", prefetch=0)
    with pytest.raises(anyqueue.ConfigError, match="ack_timeout"):
        broker.subscribe("t", ack_timeout=0)
    with pytest.raises(anyqueue.ConfigError, match="concurrency"):
        broker.consume("t", print, concurrency=0)
    with pytest.raises(anyqueue.ConfigError, match="max_deliveries"):
        broker.consume("t", print, max_deliveries=0)


class _FailingDriver(MemoryDriver):
    def publish(self, topic: str, messages: Sequence[anyqueue.Message]) -> None:
        raise OSError("connection to guest:hunter2@host refused")


def test_native_errors_are_mapped_scrubbed_and_chained() -> None:
    url = BrokerURL.parse("memory://failing")
    broker = anyqueue.Broker(
        registry.for_scheme("memory"), _FailingDriver(url, MemoryOptions()), url, ["hunter2"]
    )
    with pytest.raises(anyqueue.ConnectionError) as raised:
        broker.publish("t", b"x")
    assert "hunter2" not in str(raised.value) and "***" in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)


def test_handler_may_settle_itself(broker: anyqueue.Broker) -> None:
    broker.declare("t", "g")
    seen: list[int] = []

    def handler(message: anyqueue.Message) -> None:
        seen.append(message.delivery_count)
        if message.delivery_count == 1:
            message.nack()  # asks for a retry itself; the worker settles nothing more
            return
        message.ack()

    broker.publish("t", b"x")
    with broker.consume("t", handler, group="g"):
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == [1, 2]


def test_late_reply_is_discarded_not_handed_to_the_next_call(broker: anyqueue.Broker) -> None:
    def slow_first(message: anyqueue.Message) -> str:
        if message.text == "slow":
            time.sleep(0.6)
        return message.text

    with broker.serve("rpc", slow_first, concurrency=2):
        with pytest.raises(anyqueue.Timeout):
            broker.request("rpc", "slow", timeout=0.2)
        time.sleep(0.6)  # let the late reply arrive while nobody waits for it
        assert broker.request("rpc", "fast", timeout=5).text == "fast"


def test_server_skips_requests_whose_caller_gave_up(broker: anyqueue.Broker) -> None:
    with pytest.raises(anyqueue.Timeout):
        broker.request("rpc.skip", "expired", timeout=0.1)
    handled: list[str] = []

    def handler(message: anyqueue.Message) -> str:
        handled.append(message.text)
        return "ok"

    with broker.serve("rpc.skip", handler):
        assert broker.request("rpc.skip", "live", timeout=5).text == "ok"
    assert handled == ["live"]


@pytest.mark.parametrize("takes_over", [True, False])
def test_a_backend_may_answer_a_request_in_one_call(
    broker: anyqueue.Broker, monkeypatch: pytest.MonkeyPatch, takes_over: bool
) -> None:
    """rpc.AnswersRequests: a subscription driver with `reply_and_ack` gets the reply and the
    request to ack; if it declines (False), the core sends the reply and acks as usual."""
    from anyqueue.memory.driver import MemorySubscription

    answered: list[tuple[str | None, str, bytes]] = []

    def reply_and_ack(
        self: MemorySubscription, request: anyqueue.Message, address: str, reply: anyqueue.Message
    ) -> bool:
        answered.append((request.correlation_id, address, reply.body))
        if takes_over:
            broker._driver.send_reply(address, reply)
            self.ack([request])
        return takes_over

    monkeypatch.setattr(MemorySubscription, "reply_and_ack", reply_and_ack, raising=False)
    with broker.serve("rpc.once", lambda message: message.text.upper()):
        assert broker.request("rpc.once", "one", timeout=5).text == "ONE"
        assert broker.request("rpc.once", "two", timeout=5).text == "TWO"
    assert [body for _, _, body in answered] == [b"ONE", b"TWO"]
    assert all(address.startswith("anyqueue.reply.") for _, address, _ in answered)
    # every request was acked exactly once: nothing is left for the next server
    with broker.subscribe("rpc.once", "anyqueue.rpc") as sub:
        assert sub.receive(timeout=0.2) is None


def test_worker_run_stops_on_sigterm(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import signal, threading, time
        import anyqueue
        broker = anyqueue.connect()
        worker = broker.consume("t", lambda m: None, group="g")

        def announce_once_run_handles_sigterm():
            while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                time.sleep(0.01)
            print("ready", flush=True)

        threading.Thread(target=announce_once_run_handles_sigterm, daemon=True).start()
        worker.run()
        print("stopped", flush=True)
        broker.close()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert process.stdout.read().strip() == "stopped"


def test_exported_members_are_complete_and_sorted() -> None:
    public = {name for name in dir(anyqueue) if not name.startswith("_") and name[0].isupper()}
    public |= {"backends", "connect", "__version__"}
    assert set(anyqueue.__all__) == public
    assert anyqueue.__all__ == sorted(anyqueue.__all__)


class _BatchingDriver(MemoryDriver):
    """memory:// whose subscriptions batch acks by ten, recording each ack call."""

    ack_calls: list[int]

    def subscribe(self, topic, group, *, prefetch, ack_timeout):  # type: ignore[no-untyped-def]
        inner = super().subscribe(topic, group, prefetch=prefetch, ack_timeout=ack_timeout)
        inner.ack_batch_size = 10  # type: ignore[misc]
        calls = self.ack_calls = []
        send = inner.ack

        def ack(messages: Sequence[anyqueue.Message]) -> None:
            calls.append(len(messages))
            send(messages)

        inner.ack = ack  # type: ignore[method-assign]
        return inner


def test_a_batched_ack_is_sent_soon_even_if_the_subscriber_goes_idle() -> None:
    url = BrokerURL.parse(f"memory://{uuid.uuid4().hex}")
    driver = _BatchingDriver(url, MemoryOptions())
    broker = anyqueue.Broker(registry.for_scheme("memory"), driver, url, [])
    broker.declare("t", "g")
    broker.publish("t", b"x")
    with broker.subscribe("t", "g") as sub:
        message = sub.receive(timeout=2)
        assert message is not None
        message.ack()  # one ack of a batch of ten, and no further receive() or close()
        deadline = time.monotonic() + 5
        while not driver.ack_calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert driver.ack_calls == [1]
    broker.close()


def _batching_broker() -> tuple[anyqueue.Broker, _BatchingDriver]:
    url = BrokerURL.parse(f"memory://{uuid.uuid4().hex}")
    driver = _BatchingDriver(url, MemoryOptions())
    return anyqueue.Broker(registry.for_scheme("memory"), driver, url, []), driver


def test_receive_then_ack_one_at_a_time_sends_acks_in_full_batches() -> None:
    """The usual loop (receive, ack, receive...) must not flush a batch on every receive: on
    SQS that would be one DeleteMessageBatch request per message instead of one per ten."""
    broker, driver = _batching_broker()
    broker.declare("t", "g")
    broker.publish_batch("t", [b"x"] * 30)
    with broker.subscribe("t", "g", prefetch=30) as sub:
        for _ in range(30):
            message = sub.receive(timeout=2)
            assert message is not None
            message.ack()
        assert driver.ack_calls == [10, 10, 10]
    broker.close()


def test_a_batch_acked_at_once_is_one_driver_call_per_ack_batch() -> None:
    broker, driver = _batching_broker()
    broker.declare("t", "g")
    broker.publish_batch("t", [b"x"] * 25)
    with broker.subscribe("t", "g", prefetch=25) as sub:
        received: list[anyqueue.Message] = []
        deadline = time.monotonic() + 5
        while len(received) < 25 and time.monotonic() < deadline:
            received += sub.receive_batch(timeout=1)
        assert len(received) == 25
        sub.ack(received)
        sub.ack(received)  # already settled: nothing more is sent
        assert driver.ack_calls == [25]
    # everything was acked: nothing comes back
    with broker.subscribe("t", "g") as sub:
        assert sub.receive_batch(timeout=0.2) == []
    broker.close()


def test_batches_taken_from_the_buffer_keep_the_published_order() -> None:
    with anyqueue.connect("memory://") as broker:
        broker.declare("t", "g")
        broker.publish_batch("t", [str(n) for n in range(6)])
        with broker.subscribe("t", "g", prefetch=6) as sub:
            first = sub.receive_batch(2, timeout=5)  # part of the buffer
            rest = sub.receive_batch(timeout=5)  # all that is left of it
            while len(first) + len(rest) < 6 and (more := sub.receive_batch(timeout=5)):
                rest += more
            assert [m.body for m in first + rest] == [str(n).encode() for n in range(6)]
            sub.ack(first + rest)  # each one handed out belongs to this subscription
        with broker.subscribe("t", "g") as again:
            assert again.receive_batch(timeout=0.2) == []
