"""The Lua side on a real server: pattern matching, one script per publish and per lease, no
leftovers, bindings shared between processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

import anyqueue
from anyqueue.names import matches
from anyqueue_redis import scripts
from anyqueue_redis.keys import Layout
from anyqueue_redis.testing import RedisServer


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def test_the_lua_matcher_agrees_with_anyqueue_names(raw: redis.Redis) -> None:
    words = ["a", "b", "dead"]
    topics = [".".join(parts) for n in range(1, 5) for parts in itertools.product(words, repeat=n)]
    patterns = [
        ".".join(parts)
        for n in range(1, 5)
        for parts in itertools.product(["a", "b", "dead", "*", "#"], repeat=n)
    ]
    pairs = [(p, t) for p in patterns for t in topics]
    results: list[int] = []
    for start in range(0, len(pairs), 2000):
        chunk = pairs[start : start + 2000]
        args = [value for pair in chunk for value in pair]
        results += raw.eval(scripts.MATCHER_PROBE.source, 0, *args)
    disagreements = [pair for pair, got in zip(pairs, results) if bool(got) != matches(*pair)]
    assert not disagreements, disagreements[:10]
    assert len(pairs) > 50_000


def test_a_publish_reaches_every_group_in_one_script(url: str, raw: redis.Redis) -> None:
    with anyqueue.connect(url) as broker:
        for group in ("one", "two", "three"):
            broker.declare("orders", group)
        broker.declare("orders.#", "pattern")
        broker.declare("other", "unrelated")
        before = _evalsha_calls(raw)
        broker.publish_batch("orders", [b"a", b"b", b"c"])
        assert _evalsha_calls(raw) - before == 1
        layout = Layout(url.rpartition("prefix=")[2])
        for topic, group, expected in [
            ("orders", "one", 3),
            ("orders", "two", 3),
            ("orders", "three", 3),
            ("orders.#", "pattern", 3),
            ("other", "unrelated", 0),
        ]:
            assert raw.llen(layout.group(topic, group).key("ready")) == expected


def test_one_lease_script_hands_out_a_whole_batch(url: str, raw: redis.Redis) -> None:
    with anyqueue.connect(url) as broker:
        broker.declare("batch", "g")
        broker.publish_batch("batch", [str(i).encode() for i in range(50)])
        with broker.subscribe("batch", "g", prefetch=50) as sub:
            before = _evalsha_calls(raw)
            first = sub.receive(timeout=5)
            assert first is not None
            assert _evalsha_calls(raw) - before == 1
            rest = [sub.receive(timeout=5) for _ in range(49)]
            assert _evalsha_calls(raw) - before == 1  # the other 49 came in the same lease
            assert [m.body for m in [first, *rest] if m] == [str(i).encode() for i in range(50)]
            for message in [first, *rest]:
                assert message is not None
                message.ack()


def test_nothing_is_left_behind_once_everything_is_acked(url: str, raw: redis.Redis) -> None:
    prefix = url.rpartition("prefix=")[2]
    with anyqueue.connect(url) as broker:
        broker.declare("clean", "g")
        broker.publish_batch("clean", [b"1", b"2", b"3"])
        with broker.subscribe("clean", "g", prefetch=3, ack_timeout=30) as sub:
            for _ in range(3):
                message = sub.receive(timeout=5)
                assert message is not None and message.delivery_count == 1
                message.nack(delay=0.01)
            for _ in range(3):
                message = sub.receive(timeout=5)
                assert message is not None
                message.ack()
        keys = Layout(prefix).group("clean", "g")
        assert raw.hlen(keys.key("body")) == 0
        assert raw.hlen(keys.key("owner")) == 0
        assert raw.llen(keys.key("ready")) == 0
        assert raw.zcard(keys.key("timers")) == 0  # no deadlines, delays or consumers left
        assert raw.llen(keys.key("waiting")) == 0


def test_a_group_declared_in_another_process_gets_messages_at_once(url: str) -> None:
    declare = f"import anyqueue; anyqueue.connect({url!r}).declare('elsewhere', 'remote')"
    subprocess.run([sys.executable, "-c", declare], check=True, timeout=60)
    with anyqueue.connect(url) as broker:
        broker.publish("elsewhere", b"seen")  # this broker never declared the group
        with broker.subscribe("elsewhere", "remote") as sub:
            message = sub.receive(timeout=5)
            assert message is not None and message.body == b"seen"
            message.ack()
