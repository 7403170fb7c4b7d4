"""`anyqueue migrate`: every message arrives intact, a failing destination or a killed run loses
nothing, and a rerun resumes with at most one batch published twice (none with dedupe, unless
the kill hit the publish call itself).

`test_every_message_arrives_exactly` moves 2,000 varied messages on every ordered pair of the
five backends (`all_pairs()`: the 20 pairs of distinct backends, and memory, RabbitMQ and Redis
with themselves) on the session's shared servers of the root conftest.py; each side of a pair
has a namespace of its own (memory:// name, RabbitMQ exchange and queue prefix, redis key
prefix, SQS prefix; Kafka has none: topic names are unique per test). The other cases run on
`behaviour_pairs()`: memory:// unless ANYQUEUE_MIGRATE_BACKENDS says more.

memory:// lives and dies with its process, so a real SIGKILL needs a broker outside it:
`test_sigkill_*` runs the migration in a child process against the shared redis-server, kills
it with SIGKILL at a controlled or a random point, and resumes. The in-process kill tests stop
a run at exact points by raising `Killed`, which migrate cannot catch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest
from click.testing import CliRunner

import anyqueue
from anyqueue import Broker, Message
from anyqueue.cli import cli
from anyqueue.cli_migrate import _ProgressLine
from anyqueue.migrate import (
    MIGRATED_FROM,
    MIGRATED_GROUP,
    MIGRATED_TOPIC,
    Journal,
    MigrationReport,
    default_state_path,
    migrate,
)

#: how long a test waits for something that should happen (a polling deadline, not a sleep)
DEADLINE = 120.0


# -- which brokers ---------------------------------------------------------------------------
#: every backend the root conftest.py can run; the 2,000-message case runs on all their pairs
BACKENDS = ("memory", "rabbitmq", "redis", "sqs", "kafka")
#: backends also paired with themselves: those whose shared server gives each side a namespace
#: cheaply. Not SQS (sqs-to-sqs took 28 s on moto, the slowest pair) nor Kafka (a cluster has
#: no namespaces, so kafka-to-kafka needs a second broker; with a second Tansu it took 16 s)
SAME_BACKEND = ("memory", "rabbitmq", "redis")
#: the session fixture (root conftest.py) of each real broker's shared server
SERVER_FIXTURE = {
    "rabbitmq": "rabbitmq_node",
    "redis": "redis_server",
    "sqs": "moto_endpoint",
    "kafka": "tansu",
}


def all_pairs(backends: Sequence[str] = BACKENDS) -> list[tuple[str, str]]:
    """Every ordered pair of distinct backends, and SAME_BACKEND ones with themselves (the two
    sides of such a pair are separate namespaces)."""
    return [
        (source, destination)
        for source, destination in itertools.product(backends, repeat=2)
        if source != destination or source in SAME_BACKEND
    ]


#: each real broker once as the source and once as the destination
RING = [("rabbitmq", "redis"), ("redis", "sqs"), ("sqs", "kafka"), ("kafka", "rabbitmq")]


def behaviour_pairs() -> list[tuple[str, str]]:
    """The pairs the other cases (to_topic, limit, idle timeout, follow, failures, dry runs,
    in-process kills) run on. They test what migrate does with what a source hands it, not how
    each broker delivers (the conformance suites prove that), so by default memory:// with
    itself. ANYQUEUE_MIGRATE_BACKENDS widens it: backend names (space or comma separated) for
    every ordered pair of them, or `ring` for RING (~8 minutes more on a 2-core machine)."""
    configured = os.environ.get("ANYQUEUE_MIGRATE_BACKENDS", "").replace(",", " ").split()
    if configured == ["ring"]:
        return RING
    return all_pairs(configured or ["memory"])


#: how long `side_url(..., killable=True)` URLs take to give a killed consumer's leases back
#: (they set it: redis consumer_timeout, SQS visibility timeout, Kafka session timeout)
LEASE_RETURN_SECONDS = {"memory": 0.0, "redis": 1.0, "rabbitmq": 0.0, "sqs": 30.0, "kafka": 6.0}


class SideURL(Protocol):
    """The type of the `side_url` fixture."""

    def __call__(self, backend: str, side: str, *, killable: bool = False) -> str: ...


@pytest.fixture(scope="session")
def side_url(request: pytest.FixtureRequest) -> SideURL:
    """`side_url(backend, side)`: a URL on the session's shared server for `backend` (root
    conftest.py, started on first use) in a namespace of `side`'s own ("a": the source side,
    "b": the destination side), so a pair of one backend is two separate brokers. `killable`:
    leases of a killed consumer come back within LEASE_RETURN_SECONDS."""

    def url(backend: str, side: str, *, killable: bool = False) -> str:
        if backend == "memory":
            return f"memory://migrate-{side}"
        server = request.getfixturevalue(SERVER_FIXTURE[backend])
        if backend == "redis":
            # a killed consumer's leases come back after consumer_timeout (30 s by default;
            # 1 s stalls of the heartbeat thread on a loaded machine would hand leases out again)
            timeout = int(LEASE_RETURN_SECONDS["redis"]) if killable else 30
            return f"{server.url}?prefix=migrate-{side}&consumer_timeout={timeout}"
        if backend == "rabbitmq":
            # the exchange option names the exchange and prefixes every queue
            return f"{server.url}?exchange=migrate-{side}"
        if backend == "sqs":
            from anyqueue_sqs.testing import sqs_url

            # a visibility timeout well above a batch's time on a loaded moto, so messages do
            # not come back while in flight
            visibility = int(LEASE_RETURN_SECONDS["sqs"])
            return sqs_url(server, prefix=f"mig{side}", visibility_timeout=visibility)
        if backend == "kafka":
            from anyqueue_kafka.testing import TANSU_OPTIONS

            # no namespace option: topics are unique per test (and no kafka-to-kafka pair)
            return str(server.url(f"{TANSU_OPTIONS}&client_id=migrate-{side}"))
        raise AssertionError(backend)

    return url


@dataclass
class Pair:
    """A connected source and destination, and names no other test uses."""

    source: Broker
    destination: Broker
    topic: str
    group: str
    #: how long "nothing more arrives" is waited for (in-process brokers answer at once)
    quiet: float
    #: the backends (source, destination)
    backends: tuple[str, str] = ("memory", "memory")

    @property
    def ordered(self) -> bool:
        """Both keep one consumer's publish order, so the migration must too."""
        return (
            self.source.capabilities.ordering
            == self.destination.capabilities.ordering
            == ("global")
        )


def _pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-to-{pair[1]}"


@contextlib.contextmanager
def connected_pair(side_url: SideURL, backends: tuple[str, str]) -> Iterator[Pair]:
    source_backend, destination_backend = backends
    source_url = side_url(source_backend, "a")
    destination_url = side_url(destination_backend, "b")
    in_process = source_backend == destination_backend == "memory"
    with anyqueue.connect(source_url) as source, anyqueue.connect(destination_url) as destination:
        yield Pair(
            source,
            destination,
            topic=f"migrate-{uuid.uuid4().hex[:12]}",
            group="billing",
            quiet=0.2 if in_process else 1.5,
            backends=backends,
        )


@pytest.fixture(params=behaviour_pairs(), ids=_pair_id)
def pair(request: pytest.FixtureRequest, side_url: SideURL) -> Iterator[Pair]:
    with connected_pair(side_url, request.param) as connected:
        yield connected


@pytest.fixture(params=all_pairs(), ids=_pair_id)
def any_pair(request: pytest.FixtureRequest, side_url: SideURL) -> Iterator[Pair]:
    with connected_pair(side_url, request.param) as connected:
        yield connected


# -- messages --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """What a published message must look like when it arrives."""

    body: bytes
    key: str | None
    headers: dict[str, str]
    content_type: str
    correlation_id: str | None


def publish_samples(broker: Broker, topic: str, group: str, count: int) -> dict[str, Sent]:
    """Declare `group`, publish `count` varied messages (text, JSON, binary, custom content
    types; keys, none, unicode headers, correlation ids); return them by id, in order."""
    broker.declare(topic, group)
    messages = []
    for n in range(count):
        headers = {"seq": str(n), "trace": f"t-{n:05d}"}
        if n % 7 == 0:
            headers["note"] = "ünïcode ✓"
        kind = n % 4
        body: Any
        content_type = None
        if kind == 0:
            body = f"text {n}"
        elif kind == 1:
            body = {"n": n, "items": [n, n + 1]}
        elif kind == 2:
            body = bytes([n % 256, 0, 255]) + b"binary"
        else:
            body, content_type = f"<n>{n}</n>".encode(), "application/xml"
        messages.append(
            Message(
                body,
                key=None if n % 5 == 0 else f"user-{n % 13}",
                headers=headers,
                content_type=content_type,
                correlation_id=f"corr-{n}" if n % 11 == 0 else None,
            )
        )
    sent: dict[str, Sent] = {}
    for start in range(0, count, 500):
        chunk = messages[start : start + 500]
        for message_id, message in zip(broker.publish_batch(topic, chunk), chunk):
            sent[message_id] = Sent(
                message.body,
                message.key,
                dict(message.headers),
                message.content_type,
                message.correlation_id,
            )
    return sent


def drain(broker: Broker, topic: str, group: str, *, expect: int, quiet: float) -> list[Message]:
    """Receive and ack until `expect` messages came, then until `quiet` seconds pass with
    nothing more (so extras and duplicates are caught too). A batch at a time, as migrate
    does: acking each message before the next receive sends one ack call per message where
    the backend batches acks (SQS: 2,000 DeleteMessageBatch calls instead of 200)."""
    received: list[Message] = []
    deadline = time.monotonic() + DEADLINE
    with broker.subscribe(topic, group, prefetch=200) as subscription:
        while len(received) < expect and time.monotonic() < deadline:
            batch = subscription.receive_batch(timeout=1.0)
            subscription.ack(batch)
            received += batch
        while batch := subscription.receive_batch(timeout=quiet):
            subscription.ack(batch)
            received += batch
    return received


def check_arrived(
    pair: Pair, sent: dict[str, Sent], received: list[Message], *, one_run: bool = True
) -> None:
    """Each sent message arrived exactly once, intact, with provenance headers; in publish
    order if one uninterrupted run moved them between brokers that keep order (after an
    interruption, returned messages come back in whatever order the source redelivers)."""
    ids = [message.id for message in received]
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicated, f"{len(duplicated)} ids arrived more than once"
    assert set(ids) == set(sent), f"missing {len(set(sent) - set(ids))} of {len(sent)}"
    for message in received:
        expected = sent[message.id]
        own_headers = {
            name: value
            for name, value in message.headers.items()
            if not name.startswith("anyqueue-migrated-")
        }
        assert (
            message.body,
            message.key,
            own_headers,
            message.content_type,
            message.correlation_id,
        ) == (
            expected.body,
            expected.key,
            expected.headers,
            expected.content_type,
            expected.correlation_id,
        )
        assert message.headers[MIGRATED_FROM] == pair.source.url
        assert message.headers[MIGRATED_TOPIC] == pair.topic
        assert message.headers[MIGRATED_GROUP] == pair.group
        assert "***" in pair.source.url or "@" not in pair.source.url  # never a password
    if one_run and pair.ordered:
        assert ids == list(sent), "one migration keeps the source's order"


# -- the cases -------------------------------------------------------------------------------
#: messages the heavyweight case moves on every pair
MATRIX_MESSAGES = 2000


def test_every_message_arrives_exactly(any_pair: Pair) -> None:
    pair = any_pair
    total = MATRIX_MESSAGES
    started = time.monotonic()
    sent = publish_samples(pair.source, pair.topic, pair.group, total)
    published = time.monotonic()
    seen: list[MigrationReport] = []

    report = migrate(
        pair.source,
        pair.destination,
        topic=pair.topic,
        group=pair.group,
        idle_timeout=pair.quiet,
        progress=lambda live: seen.append(dataclasses.replace(live)),
    )
    migrated = time.monotonic()

    assert report.ok and report.stopped_by == "idle", report.summary()
    assert (report.moved, report.skipped, report.failed) == (total, 0, 0)
    assert report.bytes_moved == sum(len(s.body) for s in sent.values())
    assert seen and seen[-1].moved == total
    assert [s.moved for s in seen] == sorted(s.moved for s in seen)
    received = drain(pair.destination, pair.topic, pair.group, expect=total, quiet=pair.quiet)
    drained = time.monotonic()
    check_arrived(pair, sent, received)
    assert drain(pair.source, pair.topic, pair.group, expect=0, quiet=pair.quiet) == []
    print(
        f"{_pair_id(pair.backends)}: publish {published - started:.1f}s, migrate "
        f"{migrated - published:.1f}s ({report.summary()}), drain {drained - migrated:.1f}s"
    )


def test_to_topic_publishes_there_and_declares_the_group_first(pair: Pair) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 300)
    renamed = pair.topic + ".v2"

    report = migrate(
        pair.source,
        pair.destination,
        topic=pair.topic,
        group=pair.group,
        to_topic=renamed,
        idle_timeout=pair.quiet,
    )

    assert report.ok and report.moved == 300, report.summary()
    received = drain(pair.destination, renamed, pair.group, expect=300, quiet=pair.quiet)
    check_arrived(pair, sent, received)
    assert {m.topic for m in received} == {renamed}
    assert drain(pair.destination, pair.topic, pair.group, expect=0, quiet=pair.quiet) == []


def test_limit_moves_exactly_that_many_and_leaves_the_rest(pair: Pair) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 500)

    report = migrate(
        pair.source,
        pair.destination,
        topic=pair.topic,
        group=pair.group,
        limit=130,
        batch_size=40,
        idle_timeout=pair.quiet,
    )

    assert report.ok and report.stopped_by == "limit", report.summary()
    assert report.moved == 130
    moved = drain(pair.destination, pair.topic, pair.group, expect=130, quiet=pair.quiet)
    left = drain(pair.source, pair.topic, pair.group, expect=370, quiet=pair.quiet)
    assert len(moved) == 130 and len(left) == 370
    assert {m.id for m in moved} | {m.id for m in left} == set(sent)
    if pair.ordered:
        assert [m.id for m in moved] == list(sent)[:130]


def test_idle_timeout_ends_the_run(pair: Pair) -> None:
    pair.source.declare(pair.topic, pair.group)
    empty = migrate(
        pair.source, pair.destination, topic=pair.topic, group=pair.group, idle_timeout=0.1
    )
    assert empty.ok and empty.stopped_by == "idle" and empty.moved == 0

    # the destination group exists now: what arrives there meanwhile is kept
    pair.destination.publish(pair.topic, b"kept")
    kept = drain(pair.destination, pair.topic, pair.group, expect=1, quiet=pair.quiet)
    assert [m.body for m in kept] == [b"kept"]

    publish_samples(pair.source, pair.topic, pair.group, 30)
    some = migrate(
        pair.source, pair.destination, topic=pair.topic, group=pair.group, idle_timeout=0.1
    )
    assert some.stopped_by == "idle" and some.moved == 30


def test_follow_keeps_forwarding_until_stopped_from_another_thread(pair: Pair) -> None:
    pair.source.declare(pair.topic, pair.group)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = migrate(
                pair.source,
                pair.destination,
                topic=pair.topic,
                group=pair.group,
                follow=True,
                idle_timeout=0.01,  # ignored with follow: waves far apart still move
                batch_size=25,
                stop=stop,
            )
        except BaseException as err:  # surfaced by the assertion below
            outcome["error"] = err

    shovel = threading.Thread(target=run, name="migrate-follow")
    shovel.start()
    received: list[Message] = []
    sent: dict[str, Sent] = {}
    try:
        with pair.destination.subscribe(pair.topic, pair.group, prefetch=100) as subscription:
            for wave in range(3):
                sent |= publish_samples(pair.source, pair.topic, pair.group, 100)
                deadline = time.monotonic() + DEADLINE
                while len(received) < 100 * (wave + 1) and time.monotonic() < deadline:
                    message = subscription.receive(timeout=1.0)
                    if message is not None:
                        message.ack()
                        received.append(message)
                assert shovel.is_alive()
    finally:
        stop.set()
        shovel.join(DEADLINE)
    assert not shovel.is_alive()
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.ok and report.stopped_by == "stop" and report.moved == 300
    received += drain(pair.destination, pair.topic, pair.group, expect=0, quiet=pair.quiet)
    check_arrived(pair, sent, received)


@contextlib.contextmanager
def patched(target: object, name: str, replacement: Any) -> Iterator[None]:
    """Replace an attribute of one instance (a method or a value), then restore it."""
    missing = object()
    original = vars(target).get(name, missing)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        if original is missing:
            delattr(target, name)
        else:
            setattr(target, name, original)


def test_destination_failing_mid_run_loses_nothing(pair: Pair) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 500)
    real_publish = pair.destination.publish_batch
    accepted: list[int] = []
    refused: list[int] = []

    def publish_then_fail(topic: str, messages: Any) -> list[str]:
        messages = list(messages)
        if len(accepted) == 3:
            refused.append(len(messages))
            raise anyqueue.ConnectionError("destination went away")
        accepted.append(len(messages))
        return real_publish(topic, messages)

    with patched(pair.destination, "publish_batch", publish_then_fail):
        broken = migrate(
            pair.source,
            pair.destination,
            topic=pair.topic,
            group=pair.group,
            batch_size=50,
            idle_timeout=pair.quiet,
        )

    assert not broken.ok and broken.stopped_by == "error"
    assert "destination went away" in (broken.error or "")
    # batches are as full as the source delivers: 50 each on memory://, maybe fewer elsewhere
    assert (broken.moved, broken.failed) == (sum(accepted), refused[0])
    left = 500 - broken.moved
    depth = pair.source._driver.depth(pair.topic, pair.group)
    assert depth in (None, left)  # the source still holds the rest (where it can tell)

    resumed = migrate(
        pair.source, pair.destination, topic=pair.topic, group=pair.group, idle_timeout=pair.quiet
    )
    assert resumed.ok and resumed.moved == left, resumed.summary()
    received = drain(pair.destination, pair.topic, pair.group, expect=500, quiet=pair.quiet)
    check_arrived(pair, sent, received, one_run=False)


def test_messages_too_large_for_the_destination_stay_at_the_source(pair: Pair) -> None:
    pair.source.declare(pair.topic, pair.group)
    small = pair.source.publish_batch(pair.topic, [b"s" * 100] * 20)
    large = pair.source.publish_batch(pair.topic, [b"L" * 5000] * 3)
    # a destination that takes at most 1,000 bytes (its publish enforces it too)
    limited = dataclasses.replace(pair.destination.capabilities, max_body_bytes=1000)

    with patched(pair.destination, "capabilities", limited):
        report = migrate(
            pair.source,
            pair.destination,
            topic=pair.topic,
            group=pair.group,
            idle_timeout=pair.quiet,
        )

    assert (report.moved, report.failed) == (20, 3) and not report.ok
    arrived = drain(pair.destination, pair.topic, pair.group, expect=20, quiet=pair.quiet)
    assert sorted(m.id for m in arrived) == sorted(small)
    left = drain(pair.source, pair.topic, pair.group, expect=3, quiet=pair.quiet)
    assert sorted(m.id for m in left) == sorted(large)


def test_dry_run_moves_nothing(pair: Pair) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 120)

    report = migrate(
        pair.source, pair.destination, topic=pair.topic, group=pair.group, dry_run=True,
        idle_timeout=pair.quiet,
    )  # fmt: skip

    assert report.dry_run and report.ok and report.would_move == 120 and report.moved == 0
    assert report.counted_by in ("depth", "leasing")
    assert drain(pair.destination, pair.topic, pair.group, expect=0, quiet=pair.quiet) == []
    left = drain(pair.source, pair.topic, pair.group, expect=120, quiet=pair.quiet)
    assert {m.id for m in left} == set(sent)
    # by depth nothing was touched; by leasing every message was delivered once already
    first_delivery = 1 if report.counted_by == "depth" else 2
    assert {m.delivery_count for m in left} == {first_delivery}


def test_dry_run_without_a_depth_leases_and_returns(pair: Pair) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 40)

    with patched(pair.source._driver, "depth", lambda topic, group: None):
        report = migrate(
            pair.source,
            pair.destination,
            topic=pair.topic,
            group=pair.group,
            dry_run=True,
            limit=25,
            idle_timeout=pair.quiet,
        )

    assert (report.would_move, report.counted_by, report.at_least) == (25, "leasing", False)
    left = drain(pair.source, pair.topic, pair.group, expect=40, quiet=pair.quiet)
    assert {m.id for m in left} == set(sent)
    assert sorted(m.delivery_count for m in left) == [1] * 15 + [2] * 25


# -- killed at a controlled point, in this process --------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in migrate handles it."""


#: phase → duplicates (without dedupe, with dedupe) after a kill in a batch of `size` messages
KILL_PHASES: dict[str, Callable[[int], tuple[int, int]]] = {
    # the destination never saw the batch
    "before-publish": lambda size: (0, 0),
    # it took half; nobody heard back: the rerun sends the whole batch again
    "publish-half": lambda size: (size // 2, size // 2),
    # it took all of it; the confirmation died with the process
    "publish-done": lambda size: (size, size),
    # confirmed and journaled; killed before the first ack at the source
    "ack": lambda size: (size, 0),
}
KILL_BATCH = 4
BATCH = 50


def arm(
    phase: str,
    source: Broker,
    destination: Broker,
    die: Callable[[], NoReturn],
    *,
    batch: int = KILL_BATCH,
    slow: float = 0.0,
    killed: dict[str, int] | None = None,
) -> dict[str, int]:
    """Make this migration die at `phase` of batch `batch` (its numbering: publish calls);
    return a dict that gets the "size" of that batch. `slow` seconds after each publish make
    the destination slow, for random kills."""
    published = itertools.count(1)
    current = [0]
    killed = {} if killed is None else killed
    real_publish = destination.publish_batch

    def publish_batch(topic: str, messages: Any) -> list[str]:
        messages = list(messages)
        current[0] = next(published)
        if current[0] == batch:
            killed["size"] = len(messages)
            if phase == "before-publish":
                die()
            if phase == "publish-half":
                real_publish(topic, messages[: len(messages) // 2])
                die()
            if phase == "publish-done":
                real_publish(topic, messages)
                die()
        ids = real_publish(topic, messages)
        if slow:
            time.sleep(slow)  # the child's slow destination; the test itself never sleeps
        return ids

    destination.publish_batch = publish_batch  # type: ignore[method-assign]
    if phase != "ack":
        return killed
    real_subscribe = source.subscribe

    def subscribe(*args: Any, **kwargs: Any) -> anyqueue.Subscription:
        subscription = real_subscribe(*args, **kwargs)
        real_settle = subscription._settle

        def settle(message: Message, **how: Any) -> None:
            if current[0] == batch:
                die()
            real_settle(message, **how)

        subscription._settle = settle  # type: ignore[method-assign]
        return subscription

    source.subscribe = subscribe  # type: ignore[method-assign]
    return killed


def _raise_killed() -> NoReturn:
    raise Killed


@pytest.mark.parametrize("dedupe", [False, True], ids=["plain", "dedupe"])
@pytest.mark.parametrize("phase", list(KILL_PHASES))
def test_killed_in_process_at_a_controlled_point_then_resumed(
    pair: Pair, tmp_path: Path, phase: str, dedupe: bool
) -> None:
    sent = publish_samples(pair.source, pair.topic, pair.group, 600)
    state = tmp_path / "journal.json" if dedupe else None
    options: dict[str, Any] = dict(
        topic=pair.topic,
        group=pair.group,
        batch_size=BATCH,
        dedupe=dedupe,
        state_path=state,
        idle_timeout=pair.quiet,
    )
    killed = arm(phase, pair.source, pair.destination, _raise_killed)
    try:
        with pytest.raises(Killed):
            migrate(pair.source, pair.destination, **options)
    finally:
        del pair.destination.publish_batch
        if phase == "ack":
            del pair.source.subscribe
    if state is not None:
        assert state.exists(), "a killed run leaves its journal for the rerun"

    resumed = migrate(pair.source, pair.destination, **options)

    assert resumed.ok, resumed.summary()
    received = drain(pair.destination, pair.topic, pair.group, expect=600, quiet=pair.quiet)
    ids = [m.id for m in received]
    assert set(ids) == set(sent), "nothing is lost"
    duplicates = len(ids) - len(set(ids))
    size = killed["size"]  # 50 on memory://; a source that pushes may fill batches less
    assert duplicates == KILL_PHASES[phase](size)[dedupe] <= BATCH
    if dedupe:
        assert resumed.skipped == (size if phase == "ack" else 0)
        # journaled as "sending" before the publish: the rerun cannot tell how far it got
        assert resumed.resent == (0 if phase == "ack" else size)
        assert state is not None and not state.exists(), "a clean end removes the journal"


# -- killed with SIGKILL, in a child process ---------------------------------------------------
def child_main(config_text: str) -> None:
    """The migration in the child process (run via runpy): connect, arm the kill point or the
    slow destination, migrate; at the kill point say so on stdout and wait to be killed."""
    config = json.loads(config_text)

    killed: dict[str, int] = {}

    def wait_for_sigkill() -> NoReturn:
        print(f"KILL-POINT {killed['size']}", flush=True)
        threading.Event().wait()
        raise AssertionError("unreachable")

    with (
        anyqueue.connect(config["source"]) as source,
        anyqueue.connect(config["destination"]) as destination,
    ):
        arm(
            config["phase"],
            source,
            destination,
            wait_for_sigkill,
            batch=config["batch"],
            slow=config["slow"],
            killed=killed,
        )
        print("STARTED", flush=True)
        report = migrate(
            source,
            destination,
            topic=config["topic"],
            group=config["group"],
            batch_size=BATCH,
            dedupe=config["dedupe"],
            state_path=config["state"],
            idle_timeout=5.0,
        )
        print("FINISHED " + json.dumps(report.as_dict()), flush=True)


CHILD = "import runpy, sys; runpy.run_path(sys.argv[1])['child_main'](sys.argv[2])"


#: the pairs killed with SIGKILL: brokers outside the test process (memory:// cannot be)
KILL_PAIRS = [("redis", "redis")]


@pytest.fixture(params=KILL_PAIRS, ids=_pair_id)
def shared_pair(request: pytest.FixtureRequest, side_url: SideURL) -> tuple[str, str, float, int]:
    """URLs of a source and a destination that outlive the process using them, how long the
    source takes to give back what a killed consumer held, and how many messages to move."""
    source_backend, destination_backend = request.param
    return (
        side_url(source_backend, "a", killable=True),
        side_url(destination_backend, "b", killable=True),
        LEASE_RETURN_SECONDS[source_backend],
        MATRIX_MESSAGES,
    )


@pytest.mark.parametrize(
    "phase, dedupe, most_duplicates",
    [
        ("random", False, BATCH),  # wherever the kill lands: at most the batch in flight
        ("random", True, BATCH),  # the same bound: the kill may land inside a publish
        ("ack", True, 0),  # confirmed and journaled, killed before the ack: none twice
        ("publish-half", True, BATCH // 2),  # inside the publish: its half, sent again
    ],
    ids=["random-plain", "random-dedupe", "ack-dedupe", "publish-half-dedupe"],
)
def test_sigkill_half_way_then_resume_loses_nothing(
    shared_pair: tuple[str, str, float, int],
    tmp_path: Path,
    phase: str,
    dedupe: bool,
    most_duplicates: int,
) -> None:
    source_url, destination_url, lease_return, total = shared_pair
    topic, group = f"killed-{uuid.uuid4().hex[:12]}", "billing"
    with anyqueue.connect(source_url) as source, anyqueue.connect(destination_url) as destination:
        sent = publish_samples(source, topic, group, total)
        destination.declare(topic, group)
        state = str(tmp_path / "journal.json") if dedupe else None
        config = {
            "source": source_url,
            "destination": destination_url,
            "topic": topic,
            "group": group,
            "dedupe": dedupe,
            "state": state,
            "phase": phase,
            "batch": total // BATCH // 2,  # the kill point: half-way
            "slow": 0.05 if phase == "random" else 0.0,
        }
        received: list[Message] = []
        with destination.subscribe(topic, group, prefetch=200) as watcher:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, __file__, json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                lines = _lines_of(child)
                killed_size = 0  # the size of the batch killed, told at controlled points
                if phase == "random":
                    # kill once the destination has more than half of the messages
                    _receive_until(watcher, received, total // 2)
                else:
                    killed_size = int(_expect_line(lines, "KILL-POINT", child).split()[1])
                os.kill(child.pid, signal.SIGKILL)
                child.wait(DEADLINE)
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            assert child.returncode == -signal.SIGKILL, child.stderr.read()  # type: ignore[union-attr]
            killed_at = len(received)

        resumed = migrate(
            source,
            destination,
            topic=topic,
            group=group,
            batch_size=BATCH,
            dedupe=dedupe,
            state_path=state,
            idle_timeout=lease_return + 2.0,  # until the killed consumer's leases are back
        )
        assert resumed.ok, resumed.summary()
        received += drain(destination, topic, group, expect=total - killed_at, quiet=1.5)
    print(f"killed after {killed_at} arrived; resumed: {resumed.summary()}")

    ids = [m.id for m in received]
    assert set(ids) == set(sent), f"lost {len(set(sent) - set(ids))} messages"
    duplicates = len(ids) - len(set(ids))
    assert duplicates <= most_duplicates, f"{duplicates} duplicates"
    if phase == "ack":
        assert resumed.skipped == killed_size and duplicates == 0
    if phase == "publish-half":
        assert resumed.resent == killed_size and duplicates == killed_size // 2


def _lines_of(child: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _expect_line(lines: queue.Queue[str], wanted: str, child: subprocess.Popen[str]) -> str:
    """The first line from the child that starts with `wanted`."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if child.poll() is not None:
                break
            continue
        if line.startswith(wanted):
            return line
        assert not line.startswith("FINISHED"), f"the child finished without being killed: {line}"
    raise AssertionError(f"no {wanted!r} from the child (exit {child.poll()})")


def _receive_until(
    subscription: anyqueue.Subscription, received: list[Message], count: int
) -> None:
    deadline = time.monotonic() + DEADLINE
    while len(received) < count:
        assert time.monotonic() < deadline, f"only {len(received)} of {count} arrived"
        message = subscription.receive(timeout=1.0)
        if message is not None:
            message.ack()
            received.append(message)


# -- arguments, journal and CLI (memory://) -----------------------------------------------------
@pytest.fixture
def memory_pair() -> Iterator[Pair]:
    name = uuid.uuid4().hex[:8]
    with (
        anyqueue.connect(f"memory://{name}-a") as source,
        anyqueue.connect(f"memory://{name}-b") as destination,
    ):
        yield Pair(source, destination, topic="orders", group="billing", quiet=0.2)


def test_refuses_to_move_a_group_into_itself(memory_pair: Pair) -> None:
    source = memory_pair.source
    with pytest.raises(anyqueue.ConfigError, match="same group"):
        migrate(source, source.url, topic="orders", group="g")
    with pytest.raises(anyqueue.ConfigError, match="same group"):
        migrate(source, source, topic="orders.#", group="g", to_topic="orders.new")
    publish_samples(source, "orders", "g", 5)
    report = migrate(source, source, topic="orders", group="g", to_topic="orders-v2",
                     idle_timeout=0.1)  # fmt: skip
    assert report.moved == 5


def test_argument_checks(memory_pair: Pair) -> None:
    bad: list[dict[str, Any]] = [
        {"limit": 0},
        {"batch_size": 0},
        {"idle_timeout": -1},
        {"follow": True, "dry_run": True},
        {"state_path": "somewhere.json"},
    ]
    for options in bad:
        with pytest.raises(anyqueue.ConfigError):
            migrate(memory_pair.source, memory_pair.destination, topic="t", group="g", **options)


def test_a_pattern_source_keeps_each_message_topic(memory_pair: Pair) -> None:
    source, destination = memory_pair.source, memory_pair.destination
    source.declare("logs.#", "archive")
    source.publish("logs.eu.error", b"eu")
    source.publish("logs.us.info", b"us")
    destination.declare("logs.eu.error", "check")
    destination.declare("logs.us.info", "check")

    report = migrate(source, destination, topic="logs.#", group="archive", idle_timeout=0.1)

    assert report.moved == 2
    for topic, body in (("logs.eu.error", b"eu"), ("logs.us.info", b"us")):
        (message,) = drain(destination, topic, "check", expect=1, quiet=0.1)
        assert message.body == body and message.headers[MIGRATED_TOPIC] == topic
    assert len(drain(destination, "logs.#", "archive", expect=2, quiet=0.1)) == 2


def test_journal_is_locked_tied_to_its_migration_and_named_without_secrets(
    tmp_path: Path, memory_pair: Pair
) -> None:
    report = MigrationReport("amqp://u:***@old/", "redis://new:6379/0", "orders", None, "g")
    path = tmp_path / "j.json"
    with Journal.for_migration(report, path) as journal:
        journal.write(sending=["a"], sent={"b"})
        assert journal.load() == ({"b"}, {"a"})
        with pytest.raises(anyqueue.ConfigError, match="another migration is using"):
            Journal.for_migration(report, path).__enter__()
    other = dataclasses.replace(report, group="h")
    with (
        pytest.raises(anyqueue.ConfigError, match="belongs to another migration"),
        Journal.for_migration(other, path) as journal,
    ):
        journal.load()
    default = default_state_path(
        source=report.source, destination=report.destination, topic="orders", to_topic=None,
        group="g",
    )  # fmt: skip
    assert default.name.startswith("orders--g--") and "***" not in str(default)


def test_default_journal_lives_in_the_cache_and_goes_after_a_clean_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_pair: Pair
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    publish_samples(memory_pair.source, "orders", "billing", 10)
    report = migrate(
        memory_pair.source, memory_pair.destination, topic="orders", group="billing",
        dedupe=True, idle_timeout=0.1,
    )  # fmt: skip
    assert report.moved == 10 and report.state_path is not None
    assert Path(report.state_path).parent == tmp_path / "anyqueue" / "migrate"
    assert not Path(report.state_path).exists()


def test_journal_forgets_earlier_ids_only_once_the_source_is_drained(
    memory_pair: Pair, tmp_path: Path
) -> None:
    source, destination = memory_pair.source, memory_pair.destination
    state = tmp_path / "j.json"
    publish_samples(source, "orders", "billing", 30)
    options: dict[str, Any] = dict(
        topic="orders", group="billing", dedupe=True, state_path=state, idle_timeout=0.1
    )
    # an earlier run was killed after its acks went through, before the journal moved on
    with Journal.for_migration(migrate(source, destination, dry_run=True, topic="orders",
                                       group="billing"), state) as journal:  # fmt: skip
        journal.write(sending=[], sent={"acked-long-ago"})

    stopped_early = migrate(source, destination, limit=10, **options)
    assert stopped_early.stopped_by == "limit" and stopped_early.skipped == 0
    assert json.loads(state.read_text())["sent"] == ["acked-long-ago"]  # may still come back

    drained = migrate(source, destination, **options)
    assert drained.stopped_by == "idle" and drained.moved == 20
    assert not state.exists()


def test_dedupe_skips_ids_already_moved_in_this_run(memory_pair: Pair, tmp_path: Path) -> None:
    source, destination = memory_pair.source, memory_pair.destination
    source.declare("orders", "billing")
    source.publish("orders", b"once", id="order-1")
    source.publish("orders", b"redelivered copy", id="order-1")  # e.g. an at-least-once source
    source.publish("orders", b"another", id="order-2")
    source.publish("orders", b"later copy", id="order-1")
    report = migrate(source, destination, topic="orders", group="billing", dedupe=True,
                     idle_timeout=0.1, state_path=tmp_path / "j.json", batch_size=3)  # fmt: skip
    assert (report.moved, report.skipped) == (2, 2)
    arrived = drain(destination, "orders", "billing", expect=2, quiet=0.1)
    assert [m.body for m in arrived] == [b"once", b"another"]


def test_cli_migrates_and_prints_a_summary_and_json() -> None:
    name = uuid.uuid4().hex[:8]
    with anyqueue.connect(f"memory://{name}-a") as source:
        publish_samples(source, "orders", "billing", 250)
        result = CliRunner().invoke(
            cli,
            ["migrate", f"memory://{name}-a", f"memory://{name}-b", "-t", "orders",
             "-g", "billing", "--idle-timeout", "0.1", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert (record["moved"], record["ok"], record["stopped_by"]) == (250, True, "idle")
    assert "moved 250 messages" in result.stderr
    with anyqueue.connect(f"memory://{name}-b") as destination:
        assert len(drain(destination, "orders", "billing", expect=250, quiet=0.1)) == 250


def test_cli_dry_run_and_errors_exit_non_zero() -> None:
    name = uuid.uuid4().hex[:8]
    runner = CliRunner()
    with anyqueue.connect(f"memory://{name}-a") as source:
        publish_samples(source, "orders", "billing", 7)
        dry = runner.invoke(
            cli,
            ["migrate", f"memory://{name}-a", f"memory://{name}-b", "-t", "orders",
             "-g", "billing", "--dry-run"],
        )  # fmt: skip
        assert dry.exit_code == 0 and "would move 7 messages" in dry.stderr
        assert source._driver.depth("orders", "billing") == 7
        loop = runner.invoke(
            cli, ["migrate", f"memory://{name}-a", f"memory://{name}-a", "-t", "orders", "-g", "x"]
        )
        assert loop.exit_code == 1 and "same group" in loop.stderr
        needs_dedupe = runner.invoke(
            cli,
            ["migrate", f"memory://{name}-a", f"memory://{name}-b", "-t", "orders", "-g",
             "billing", "--state", "j.json"],
        )  # fmt: skip
        assert needs_dedupe.exit_code == 1 and "dedupe" in needs_dedupe.stderr
        secret = runner.invoke(
            cli,
            ["migrate", "nosuch://user:hunter2@host", f"memory://{name}-b", "-t", "t", "-g", "g"],
        )
        assert secret.exit_code == 1 and "hunter2" not in secret.output + secret.stderr


def test_cli_follow_stops_cleanly_on_sigterm_and_sigint() -> None:
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen(
            [sys.executable, "-m", "anyqueue.cli", "migrate", "memory://a", "memory://b",
             "-t", "orders", "-g", "billing", "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        while not (line := process.stderr.readline()).startswith("following"):
            assert line, "the command ended before it started following"
        process.send_signal(stop_signal)
        rest = process.stderr.read()  # until it exits and closes stderr
        assert process.wait(DEADLINE) == 0, rest
        assert "stopping after the batch in flight" in rest and "[stopped]" in rest


def test_progress_line_shows_rate_and_eta_when_the_depth_is_known() -> None:
    report = MigrationReport("memory://a", "memory://b", "t", None, "g", moved=500)
    report.moving_seconds = report.elapsed = 2.0
    report.remaining = 1500
    line = _ProgressLine.render(report)
    assert "moved 500" in line and "250 msg/s" in line and "~1,500 left" in line
    assert "ETA 0:06" in line
    report.remaining = None
    assert "ETA" not in _ProgressLine.render(report)
