"""`memory://?profile=NAME` imitates a real backend: its conformance matrix equals the real one's.

Each profile runs the whole conformance suite; the last case of each class compares the matrix
it produced with the rows the real backend claims, computed from that backend's declared
Capabilities (imported from its plugin here, in the test; the core never imports a backend).
`durable` stays UNCLAIMED in memory (nothing survives the process) where the real backend
claims it. Then the behaviours each profile imitates, one by one.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter

import pytest

import anyqueue
from anyqueue.capabilities import Capabilities
from anyqueue.memory.profiles import PROFILES
from anyqueue_conformance import CAPABILITIES, ConformanceSuite, Harness
from anyqueue_conformance.matrix import UNCLAIMED, VERIFIED, CaseResult, Matrix
from anyqueue_conformance.plugin import _RESULTS  # the suite's record of this session's cases
from anyqueue_kafka.plugin import CAPABILITIES as KAFKA
from anyqueue_rabbitmq.plugin import CAPABILITIES as RABBITMQ
from anyqueue_redis.plugin import CAPABILITIES as REDIS
from anyqueue_sqs.plugin import capabilities_for as sqs_capabilities

#: what each profile imitates: the real backend's declared capabilities (default options)
REAL: dict[str, Capabilities] = {
    "sqs": sqs_capabilities(fifo=False),
    "kafka": KAFKA,
    "rabbitmq": RABBITMQ,
    "redis": REDIS,
}
#: rows memory cannot verify: nothing survives a restart of the process
NEEDS_RESTART = {"durable"}
#: in-process, so absence checks ("nothing more arrives") need only short waits
TIME_SCALE = 0.3


def claimed_rows(caps: Capabilities) -> dict[str, str]:
    """The matrix a backend with `caps` shows when every claim holds: VERIFIED where it claims
    the capability (or the case does not depend on one), UNCLAIMED where it does not."""
    gated = {
        "ordering.global": caps.ordering == "global",
        "ordering.per_key": caps.ordering == "per_key",
        "ephemeral": not caps.replays_history,
        "no_group_not_kept": not caps.replays_history,
        "replays_history": caps.replays_history,
        "wildcards": caps.wildcards,
        "nack": caps.nack,
        "delay": caps.delay,
        "ack_timeout": caps.ack_timeout,
        "durable": caps.durable,
    }
    return {row: VERIFIED if gated.get(row, True) else UNCLAIMED for row in CAPABILITIES}


def expected_memory_rows(real: Capabilities) -> dict[str, str]:
    rows = claimed_rows(real)
    rows.update(dict.fromkeys(NEEDS_RESTART, UNCLAIMED))
    return rows


def test_claimed_rows_follow_the_capabilities() -> None:
    """The expectation itself can fail: a backend claiming less shows UNCLAIMED rows."""
    rows = claimed_rows(Capabilities(ordering="none", nack=False))
    assert rows["ordering.global"] == rows["nack"] == rows["wildcards"] == UNCLAIMED
    assert rows["round_trip"] == rows["ephemeral"] == VERIFIED
    assert claimed_rows(REAL["kafka"])["ordering.per_key"] == VERIFIED


@pytest.mark.parametrize("profile", sorted(REAL))
def test_profile_declares_the_real_capabilities(profile: str) -> None:
    with anyqueue.connect(f"memory://caps-{uuid.uuid4().hex}?profile={profile}") as broker:
        assert broker.capabilities == dataclasses.replace(REAL[profile], durable=False)
    assert set(PROFILES) == set(REAL)


class ProfileConformance(ConformanceSuite):
    """The suite on one profile, then its matrix compared with the real backend's."""

    profile: str
    url_options = ""

    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls) -> Harness:
        # a stable name: the matrix column (and the docs built from it) reads the same each run
        url = f"memory://profile-{cls.profile}?profile={cls.profile}"
        return Harness(url + cls.url_options, time_scale=TIME_SCALE)

    # collected after the inherited cases (pytest collects base-class tests first)
    def test_matrix_matches_real_backend(
        self, harness: Harness, request: pytest.FixtureRequest
    ) -> None:
        results: list[CaseResult] = [
            r for r in request.config.stash.get(_RESULTS, []) if r.url == harness.label
        ]
        matrix = Matrix(results, CAPABILITIES)
        seen = {row: matrix.cell(row, harness.label) for row in CAPABILITIES}
        missing = [row for row, cell in seen.items() if cell == "-"]
        assert not missing, f"run the whole class: no result yet for {missing}"
        assert seen == expected_memory_rows(REAL[self.profile]), matrix.table()


class TestSQSProfileConformance(ProfileConformance):
    profile = "sqs"
    # as the real suite does: a dropped consumer's messages return when their lease runs out
    url_options = "&visibility_timeout=5"


class TestKafkaProfileConformance(ProfileConformance):
    profile = "kafka"


class TestRabbitMQProfileConformance(ProfileConformance):
    profile = "rabbitmq"


class TestRedisProfileConformance(ProfileConformance):
    profile = "redis"


# -- the behaviours each profile imitates ---------------------------------------------------------
@pytest.fixture
def name() -> str:
    return f"profile-{uuid.uuid4().hex}"


def drain_all(sub: anyqueue.Subscription, *, idle: float = 0.3) -> list[anyqueue.Message]:
    """Receive and ack until nothing comes for `idle` seconds."""
    got = []
    while (message := sub.receive(timeout=idle)) is not None:
        got.append(message)
        message.ack()
    return got


def wait_for_message(sub: anyqueue.Subscription, timeout: float) -> anyqueue.Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = sub.receive(timeout=0.1)
        if message is not None:
            return message
    raise AssertionError(f"no message within {timeout}s")


def test_default_memory_is_unchanged(name: str) -> None:
    from anyqueue.memory.namespace import Namespace
    from anyqueue.memory.plugin import CAPABILITIES as MEMORY

    with anyqueue.connect(f"memory://{name}") as plain:
        assert plain.capabilities == MEMORY
        assert type(plain._driver._space) is Namespace  # no profile machinery on this path


def test_a_profile_is_its_own_namespace(name: str) -> None:
    with (
        anyqueue.connect(f"memory://{name}") as plain,
        anyqueue.connect(f"memory://{name}?profile=redis") as redis_like,
        anyqueue.connect(f"memory://{name}?profile=redis") as same,
    ):
        for broker in (plain, redis_like):
            broker.declare("t", "g")
        redis_like.publish("t", b"shared by the profile")
        with plain.subscribe("t", "g") as sub:
            assert sub.receive(timeout=0.2) is None
        with same.subscribe("t", "g") as sub:
            assert [m.body for m in drain_all(sub)] == [b"shared by the profile"]


def test_profile_options_are_checked() -> None:
    with pytest.raises(anyqueue.ConfigError, match="profile"):
        anyqueue.connect("memory://?profile=nats")
    with pytest.raises(anyqueue.ConfigError, match="profile=sqs only"):
        anyqueue.connect("memory://?profile=kafka&visibility_timeout=5")
    with pytest.raises(anyqueue.ConfigError, match="43200"):
        anyqueue.connect("memory://?profile=sqs&visibility_timeout=50000")


@pytest.mark.parametrize("profile", ["sqs", "kafka"])
def test_wildcards_refused_where_the_real_backend_refuses_them(profile: str, name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile={profile}") as broker:
        with pytest.raises(anyqueue.NotSupported):
            broker.subscribe("logs.*.error")
        with pytest.raises(anyqueue.MessageTooLarge):
            broker.publish("t", bytes(REAL[profile].max_body_bytes + 1))


def test_sqs_scrambles_the_order(name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile=sqs") as broker:
        broker.declare("t", "g")
        sent = [str(i).encode() for i in range(60)]
        broker.publish_batch("t", sent)
        with broker.subscribe("t", "g", prefetch=5) as sub:
            got = [m.body for m in drain_all(sub)]
    assert sorted(got) == sorted(sent)
    assert got != sent, "standard SQS promises no order: code relying on it must fail here"


def test_sqs_leases_every_delivery_and_workers_extend_them(name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile=sqs&visibility_timeout=2") as broker:
        broker.declare("t", "g")
        broker.publish("t", b"held too long")
        with broker.subscribe("t", "g", prefetch=2) as sub:
            first = wait_for_message(sub, 5)
            again = wait_for_message(sub, 10)  # not acked within the visibility timeout
            assert again.id == first.id and again.delivery_count == 2
            again.ack()
        broker.publish("t", b"slow handler")
        calls: list[int] = []

        def slow(message: anyqueue.Message) -> None:
            calls.append(message.delivery_count)
            time.sleep(3.5)  # longer than the lease: the worker extends it meanwhile

        with broker.consume("t", slow, group="g"):
            deadline = time.monotonic() + 20
            while not (calls and broker._driver.depth("t", "g") == 0):
                assert time.monotonic() < deadline, "the slow message was never acked"
                time.sleep(0.05)
        assert calls == [1]


def test_sqs_dropped_consumer_gives_back_only_when_the_lease_runs_out(name: str) -> None:
    with (
        anyqueue.connect(f"memory://{name}?profile=sqs&visibility_timeout=3") as broker,
        anyqueue.connect(f"memory://{name}?profile=sqs&visibility_timeout=3") as doomed,
    ):
        broker.declare("t", "g")
        message_id = broker.publish("t", b"in flight")
        held = wait_for_message(doomed.subscribe("t", "g"), 5)
        doomed._driver.drop_connections()
        held.ack()  # the dropped connection's receipt settles nothing
        with broker.subscribe("t", "g") as sub:
            assert sub.receive(timeout=0.1) is None, "SQS never hears of the dropped consumer"
            back = wait_for_message(sub, 15)
            assert back.id == message_id and back.delivery_count == 2
            back.ack()


def test_sqs_delivers_some_duplicates_within_the_declared_bound(name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile=sqs") as broker:
        broker.declare("t", "g")
        ids = broker.publish_batch("t", [str(i).encode() for i in range(400)])
        with broker.subscribe("t", "g", prefetch=50) as sub:
            got = Counter(m.id for m in drain_all(sub))
    assert set(got) == set(ids)
    duplicates = sum(count - 1 for count in got.values())
    assert 0 < duplicates <= REAL["sqs"].duplicate_fraction * len(ids)


def test_sqs_rounds_leases_and_delays_up_to_whole_seconds() -> None:
    from anyqueue.memory.profiles import whole_seconds

    assert [whole_seconds(s) for s in (0.01, 1.0, 1.2, 29.5)] == [1.0, 1.0, 2.0, 30.0]


def test_kafka_partitions_go_to_one_member_each(name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile=kafka") as broker:
        broker.declare("t", "g")
        members = [broker.subscribe("t", "g", prefetch=100) for _ in range(4)]
        try:
            batch = [anyqueue.Message(f"{i % 8}:{i}".encode(), key=f"k{i % 8}") for i in range(80)]
            broker.publish_batch("t", batch)
            got = [[m.text for m in drain_all(member)] for member in members]
        finally:
            for member in members:
                member.close()
    assert sorted(t for texts in got for t in texts) == sorted(m.text for m in batch)
    assert [] in got, "4 members on 3 partitions: one of them stays idle, as on Kafka"
    owner: dict[str, int] = {}
    for index, texts in enumerate(got):
        for key in {t.split(":")[0] for t in texts}:
            assert key not in owner, f"key {key} went to two members"
            owner[key] = index
            sequence = [int(t.split(":")[1]) for t in texts if t.split(":")[0] == key]
            assert sequence == sorted(sequence), f"key {key} out of order"


def test_kafka_closing_member_hands_its_partitions_over(name: str) -> None:
    with anyqueue.connect(f"memory://{name}?profile=kafka") as broker:
        broker.declare("t", "g")
        first, second = (broker.subscribe("t", "g") for _ in range(2))
        broker.publish_batch("t", [anyqueue.Message(b"x", key=f"k{i}") for i in range(30)])
        held = wait_for_message(first, 5)
        first.close()  # its partitions (and the message it held) go to the other member
        got = drain_all(second)
        second.close()
    assert len(got) == 30 and held.id in {m.id for m in got}


@pytest.mark.parametrize(
    ("profile", "after_nack"),
    [
        ("kafka", [b"2", b"3", b"1"]),  # a copy goes to the retry topic: behind newer messages
        ("rabbitmq", [b"2", b"3", b"1"]),  # a classic queue requeues at the back
        ("redis", [b"1", b"2", b"3"]),  # back at the head: a single consumer keeps its order
        (None, [b"1", b"2", b"3"]),
    ],
)
def test_where_a_nacked_message_goes(
    profile: str | None, after_nack: list[bytes], name: str
) -> None:
    url = f"memory://{name}" + (f"?profile={profile}" if profile else "")
    with anyqueue.connect(url) as broker:
        broker.declare("t", "g")
        broker.publish_batch("t", [anyqueue.Message(b, key="k") for b in (b"1", b"2", b"3")])
        with broker.subscribe("t", "g", prefetch=1) as sub:
            wait_for_message(sub, 5).nack()
            assert [m.body for m in drain_all(sub)] == after_nack


def test_rabbitmq_delays_round_up_like_the_real_backend() -> None:
    from anyqueue.memory.profiles import rabbitmq_delay
    from anyqueue_rabbitmq.topology import delay_bucket_ms

    for seconds in (0.0004, 0.001, 0.015, 0.1, 0.101, 1.234, 59.99, 3600.5, 5e6):
        assert rabbitmq_delay(seconds) == delay_bucket_ms(seconds) / 1000, seconds
