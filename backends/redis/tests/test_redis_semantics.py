"""Redis-specific guarantees the shared suite cannot provoke: a consumer process that dies,
heartbeats of a slow but live one, ephemeral groups of dead processes, a restart under open
subscriptions, reply lists that expire, servers that answer in one write."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

import anyqueue
from anyqueue_redis.keys import Layout
from anyqueue_redis.testing import RedisServer, kill_connections

#: a consumer process that takes a message (or binds an ephemeral group) and dies on the spot,
#: without closing anything
DIE_HOLDING = """
import os, sys, anyqueue
broker = anyqueue.connect(sys.argv[1])
subscription = broker.subscribe(sys.argv[2], sys.argv[3] or None)
if sys.argv[3]:
    message = subscription.receive(timeout=20)
    print(message.id if message else "", flush=True)
else:
    print("bound", flush=True)
os._exit(0)
"""


#: a server process that answers until it is killed (SIGKILL: nothing is closed)
SERVE_UNTIL_KILLED = """
import sys, time, anyqueue
broker = anyqueue.connect(sys.argv[1])
broker.serve(sys.argv[2], lambda message: b"from the doomed server")
print("serving", flush=True)
time.sleep(600)
"""


def die_holding(url: str, topic: str, group: str | None) -> str:
    """Run DIE_HOLDING; return what it printed (the id of the message it held)."""
    done = subprocess.run(
        [sys.executable, "-c", DIE_HOLDING, url, topic, group or ""],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


def test_leases_of_a_consumer_that_died_come_back(url: str) -> None:
    short = f"{url}&consumer_timeout=1"
    with anyqueue.connect(short) as broker:
        broker.declare("jobs", "workers")
        message_id = broker.publish("jobs", b"work")
        assert die_holding(short, "jobs", "workers") == message_id
        with broker.subscribe("jobs", "workers") as sub:
            back = sub.receive(timeout=30)
            assert back is not None and back.id == message_id
            assert back.delivery_count == 2 and back.redelivered
            back.ack()


def test_a_slow_consumer_keeps_its_lease_by_heartbeat(url: str) -> None:
    short = f"{url}&consumer_timeout=0.5"
    with anyqueue.connect(short) as holder, anyqueue.connect(short) as other:
        holder.declare("slow", "g")
        holder.publish("slow", b"long job")
        with holder.subscribe("slow", "g") as held_sub, other.subscribe("slow", "g") as sub:
            held = held_sub.receive(timeout=5)
            assert held is not None
            # four consumer timeouts pass; the holder's heartbeat keeps the message its own
            assert sub.receive(timeout=2.0) is None
            held.ack()
            assert sub.receive(timeout=0.5) is None


def test_an_ephemeral_group_of_a_dead_process_is_removed(url: str, raw: redis.Redis) -> None:
    short = f"{url}&consumer_timeout=0.5"
    layout = Layout(url.rpartition("prefix=")[2])
    assert die_holding(short, "news", None) == "bound"
    assert raw.hlen(layout.route("news")) == 1
    with anyqueue.connect(short) as broker:

        def pruned() -> bool:
            broker.publish("news", b"anyone?")  # the publish script drops lapsed groups
            return raw.hlen(layout.route("news")) == 0

        wait_until(pruned, 30, "the dead subscriber's group to be unbound")
    leftovers = list(raw.scan_iter(f"{layout.prefix}:g:*"))
    assert leftovers == []


def test_closing_an_ephemeral_subscription_removes_its_group(url: str, raw: redis.Redis) -> None:
    layout = Layout(url.rpartition("prefix=")[2])
    with anyqueue.connect(url) as broker:
        with broker.subscribe("events") as sub:
            broker.publish("events", b"e")
            message = sub.receive(timeout=5)
            assert message is not None
            message.ack()
        assert raw.hlen(layout.route("events")) == 0
        for key in raw.scan_iter(f"{layout.prefix}:g:*"):
            assert raw.pttl(key) > 0, f"{key!r} would stay forever"


def test_pattern_subscriptions_see_the_concrete_topic(url: str) -> None:
    with anyqueue.connect(url) as broker, broker.subscribe("logs.*.error") as sub:
        broker.publish("logs.eu.error", b"boom")
        broker.publish("logs.eu.error.dead", b"not for a pattern without .dead")
        message = sub.receive(timeout=5)
        assert message is not None and message.topic == "logs.eu.error"
        message.ack()
        assert sub.receive(timeout=0.5) is None


def test_a_restart_under_an_open_subscription(fresh_server: RedisServer) -> None:
    with anyqueue.connect(fresh_server.url) as broker:
        assert broker.capabilities.durable
        broker.declare("restart", "g")
        ids = broker.publish_batch("restart", [b"held", b"waiting"])
        with broker.subscribe("restart", "g", prefetch=1) as sub:
            held = sub.receive(timeout=5)
            assert held is not None and held.id == ids[0]
            fresh_server.restart()
            held.ack()  # leased before the link dropped: discarded, the message comes back
            got = {}
            while len(got) < 2:
                message = sub.receive(timeout=30)
                assert message is not None
                got[message.id] = message.delivery_count
                message.ack()
            assert got == {ids[0]: 2, ids[1]: 1}
            broker.publish("restart", b"after")
            after = sub.receive(timeout=10)
            assert after is not None and after.body == b"after"
            after.ack()


def test_nack_with_delay_hides_the_message_from_the_whole_group(url: str) -> None:
    with anyqueue.connect(url) as broker:
        broker.declare("later", "g")
        broker.publish("later", b"retry me")
        with broker.subscribe("later", "g") as first, broker.subscribe("later", "g") as second:
            message = first.receive(timeout=5)
            assert message is not None
            message.nack(delay=1.5)
            assert second.receive(timeout=0.5) is None  # still delayed for every member
            again = second.receive(timeout=10) or first.receive(timeout=10)
            assert again is not None and again.id == message.id
            assert again.delivery_count == 2
            again.ack()


def test_a_reply_list_nobody_reads_expires(url: str, raw: redis.Redis) -> None:
    with anyqueue.connect(url) as broker:
        driver = broker._driver
        inbox = driver.open_inbox()
        assert inbox is not None
        driver.send_reply(inbox.address, anyqueue.Message(b"late", id="r1"))
        layout = Layout(url.rpartition("prefix=")[2])
        key = layout.inbox(inbox.address.rpartition(".")[2])
        assert 0 < raw.pttl(key) <= 60_000
        replies = inbox.subscription.receive(10, 1.0)
        assert [r.body for r in replies] == [b"late"]
        inbox.subscription.close()
        assert raw.exists(key) == 0


def test_only_a_server_that_fsyncs_every_write_is_durable(
    fresh_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis(port=fresh_server.port)
    try:
        admin.config_set("appendfsync", "everysec")
        with (
            caplog.at_level("WARNING", logger="anyqueue.redis"),
            anyqueue.connect(fresh_server.url) as broker,
        ):
            assert broker.capabilities.durable is False
        assert "appendfsync=everysec" in caplog.text
        caplog.clear()
        admin.config_set("appendfsync", "always")
        with (
            caplog.at_level("WARNING", logger="anyqueue.redis"),
            anyqueue.connect(fresh_server.url) as broker,
        ):
            assert broker.capabilities.durable is True
        assert "persist" not in caplog.text
    finally:
        admin.close()


def test_a_stale_ack_leaves_the_new_lease_alone(url: str) -> None:
    with anyqueue.connect(url) as broker:
        broker.declare("stale", "g")
        broker.publish("stale", b"x")
        with (
            broker.subscribe("stale", "g", ack_timeout=0.5) as slow,
            broker.subscribe("stale", "g", ack_timeout=30) as fast,
        ):
            first = slow.receive(timeout=5)
            assert first is not None
            second = fast.receive(timeout=30)  # after slow's lease expired
            assert second is not None and second.id == first.id and second.delivery_count == 2
            first.ack()  # too late: must not remove fast's lease
            second.nack()
            third = fast.receive(timeout=5)
            assert third is not None and third.id == first.id and third.delivery_count == 3
            third.ack()


def test_a_waiting_receiver_gets_a_publish_without_a_second_call(
    url: str, raw: redis.Redis
) -> None:
    with anyqueue.connect(url) as broker:
        broker.declare("pushed", "g")
        with broker.subscribe("pushed", "g") as sub:
            got: list[anyqueue.Message | None] = []
            waiter = threading.Thread(target=lambda: got.append(sub.receive(timeout=10)))
            waiter.start()
            layout = Layout(url.rpartition("prefix=")[2])
            wait_until(
                lambda: raw.llen(layout.group("pushed", "g").key("waiting")) == 1,
                10,
                "the receiver to wait",
            )
            before = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
            broker.publish("pushed", b"straight into the box")
            waiter.join(10)
            after = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
            assert got and got[0] is not None and got[0].body == b"straight into the box"
            assert after - before == 1  # the publish script leased it to the waiting receiver
            got[0].ack()


def test_an_outage_longer_than_retry_timeout_raises_then_recovers(
    fresh_server: RedisServer,
) -> None:
    url = f"{fresh_server.url}?retry_timeout=1"
    with anyqueue.connect(url) as broker:
        broker.declare("outage", "g")
        with broker.subscribe("outage", "g") as sub:
            broker.publish("outage", b"before")
            first = sub.receive(timeout=5)
            assert first is not None
            first.ack()
            fresh_server.stop()
            with pytest.raises(anyqueue.ConnectionError):
                while sub.receive(timeout=0.3) is None:
                    pass
            with pytest.raises(anyqueue.ConnectionError):
                broker.publish("outage", b"lost")
            fresh_server.start()
            broker.publish("outage", b"after")
            after = sub.receive(timeout=10)
            assert after is not None and after.body == b"after"
            after.ack()  # on a settling connection the server closed meanwhile: sent again
    admin = redis.Redis(port=fresh_server.port)
    stored = admin.hlen(Layout("anyqueue").group("outage", "g").key("body"))
    admin.close()
    assert stored == 0, "the ack after the outage was lost"


def test_an_answer_acks_the_request_and_leaves_the_server_waiting(
    url: str, raw: redis.Redis
) -> None:
    keys = Layout(url.rpartition("prefix=")[2]).group("answer.once", "anyqueue.rpc")
    with anyqueue.connect(url) as broker:
        with broker.serve("answer.once", lambda message: message.body.upper()):
            assert broker.request("answer.once", b"warm", timeout=30).body == b"WARM"
            before = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
            for i in range(20):
                assert broker.request("answer.once", b"x%d" % i, timeout=30).body == b"X%d" % i
                # the reply went out in the same write as the ack and the server's next wait:
                # once the caller has it, the request is gone and the server already waits
                assert raw.hlen(keys.key("owner")) == 0 and raw.hlen(keys.key("body")) == 0
                assert raw.llen(keys.key("waiting")) == 1
            calls = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"]) - before
            # per request one publish and one answer script, no lease call (a few more only if
            # a wait ran out, or for heartbeats)
            assert calls < 2 * 20 + 10, calls
        # a stopped server leaves no registration a request could be leased to
        assert raw.llen(keys.key("waiting")) == 0 and raw.zcard(keys.key("timers")) == 0
        caller = threading.Thread(
            target=lambda: got.append(broker.request("answer.once", b"late", timeout=30))
        )
        got: list[anyqueue.Message] = []
        caller.start()
        wait_until(lambda: raw.llen(keys.key("ready")) == 1, 10, "the request to wait")
        deliveries: list[int] = []

        def handler(message: anyqueue.Message) -> bytes:
            deliveries.append(message.delivery_count)
            return message.body

        with broker.serve("answer.once", handler):
            caller.join(30)
        assert [reply.body for reply in got] == [b"late"] and deliveries == [1]


def test_a_link_drop_while_answering_loses_no_request(url: str) -> None:
    with anyqueue.connect(url) as client, anyqueue.connect(url) as server:
        deliveries: list[int] = []

        def handler(message: anyqueue.Message) -> bytes:
            deliveries.append(message.delivery_count)
            if len(deliveries) == 1:  # cut the server's connections before it answers
                assert kill_connections(url, server._driver.client_name) > 0
            return message.body.upper()

        with server.serve("answer.drop", handler):
            # the reply still arrives (the answer is stale, so only the reply is sent)...
            assert client.request("answer.drop", b"once", timeout=30).body == b"ONCE"
            # ...and the request, whose lease the drop ended, comes back to be answered again
            wait_until(lambda: len(deliveries) >= 2, 30, "the request to come back")
        assert deliveries == [1, 2]
        with server.subscribe("answer.drop", "anyqueue.rpc") as sub:
            assert sub.receive(timeout=0.5) is None  # the second answer acked it


def test_the_reply_listener_survives_a_dropped_link_and_ends_with_its_broker(url: str) -> None:
    with anyqueue.connect(url) as server, server.serve("listened", lambda message: message.body):
        client = anyqueue.connect(url)
        try:
            assert client.request("listened", b"before", timeout=30).body == b"before"
            assert client._requester is not None
            listener = client._requester._inbox.subscription.listener  # type: ignore[attr-defined]
            assert listener is not None and listener.is_alive()
            assert kill_connections(url, client._driver.client_name) > 0
            assert client.request("listened", b"after", timeout=30).body == b"after"
        finally:
            client.close()
        listener.join(10)
        assert not listener.is_alive()


def test_a_server_killed_after_answering_loses_no_request(url: str, raw: redis.Redis) -> None:
    short = f"{url}&consumer_timeout=1"
    keys = Layout(url.rpartition("prefix=")[2]).group("answer.kill", "anyqueue.rpc")
    doomed = subprocess.Popen(
        [sys.executable, "-c", SERVE_UNTIL_KILLED, short, "answer.kill"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "serving"
        with anyqueue.connect(short) as broker:
            reply = broker.request("answer.kill", b"first", timeout=30)
            assert reply.body == b"from the doomed server"
            assert raw.llen(keys.key("waiting")) == 1  # its answer registered it for the next
            doomed.kill()
            doomed.wait(30)
            deliveries: list[int] = []

            def handler(message: anyqueue.Message) -> bytes:
                deliveries.append(message.delivery_count)
                return b"from the survivor"

            with broker.serve("answer.kill", handler):
                # leased to the dead server's box (or not): either way it comes back
                assert broker.request("answer.kill", b"second", timeout=30).body == (
                    b"from the survivor"
                )
            assert deliveries in ([1], [2])
    finally:
        doomed.kill()
        doomed.wait(30)
