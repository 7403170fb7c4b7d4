"""`memory://?profile=NAME`: the in-process broker behaving like SQS, Kafka, RabbitMQ or Redis.

A profile gives memory:// the capabilities the real backend declares (so the core refuses what
that backend refuses: wildcards on SQS and Kafka, `ack_timeout` on Kafka, long delays, big
bodies) and imitates the behaviours users trip over when they move from memory:// to the real
thing, without a server:

| profile    | what it imitates                                                     |
|------------|----------------------------------------------------------------------|
| `sqs`      | no order: each hand-out picks one of the first 10 ready at random    |
|            | every delivery leased (visibility timeout, 30 s); `consume` extends  |
|            | leases and delays in whole seconds (rounded up), delays <= 12 h       |
|            | a dropped consumer's leases come back only when they run out         |
|            | one duplicate per 200 messages a group receives; bodies <= 192,000 B |
|            | no wildcards, no ordering rows                                       |
| `kafka`    | 3 partitions per group; a key's messages stay in one partition      |
|            | each partition read in order by one member (round-robin assignment); |
|            | members beyond the partition count stay idle                         |
|            | nack goes behind the partition's newer messages (the retry topic)    |
|            | no ack_timeout, no wildcards, delays <= 24 h, bodies <= 1,000,000 B  |
| `rabbitmq` | nacked and returned messages go to the back (classic queues)         |
|            | delays rounded up to the wait-queue buckets, <= 2^32-1 ms             |
| `redis`    | the reference semantics with Redis' declared limits (no delay limit) |

The capabilities here mirror each backend's `plugin.py`; `tests/test_memory_profiles.py` checks
that they match field by field (except `durable`, which memory never is) and that the
conformance matrix of each profile equals the real backend's. The core never imports a backend.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..capabilities import Capabilities
from ..message import Message
from .namespace import Consumer, Entry, Lease, Namespace, Queue

ProfileName = Literal["sqs", "kafka", "rabbitmq", "redis"]

#: SQS: what `anyqueue_sqs.plugin` declares — SNS's 256 KiB less base64 and metadata, 12 hours
SQS_MAX_BODY_BYTES = 192_000
SQS_MAX_VISIBILITY_SECONDS = 43_200
#: the real backend's default `visibility_timeout`
SQS_DEFAULT_VISIBILITY_SECONDS = 30.0
#: RabbitMQ: the longest per-queue TTL, in ms (the longest delay the real backend accepts)
RABBITMQ_MAX_DELAY_MS = 2**32 - 1
#: Kafka: the real backend's default partitions per topic
KAFKA_DEFAULT_PARTITIONS = 3


def whole_seconds(seconds: float) -> float:
    """SQS counts visibility in whole seconds: rounded up, at least one."""
    return float(max(1, math.ceil(seconds)))


def rabbitmq_delay(seconds: float) -> float:
    """The wait-queue bucket the RabbitMQ backend rounds a delay up to (10 ms steps up to
    100 ms, then two significant digits), so delays come back exactly as late as there."""
    ms = max(1, math.ceil(seconds * 1000))
    if ms <= 100:
        return min(100, math.ceil(ms / 10) * 10) / 1000
    step: int = 10 ** (len(str(ms)) - 2)
    return min(RABBITMQ_MAX_DELAY_MS, math.ceil(ms / step) * step) / 1000


@dataclass(frozen=True)
class Profile:
    """What one imitated broker declares and how its groups behave."""

    name: ProfileName
    capabilities: Capabilities
    #: hand out a random one of the first `scramble_window` ready messages (0: in order)
    scramble_window: int = 0
    #: messages coming back by themselves (close, dropped link, lease expiry) join the back
    returns_to_tail: bool = False
    #: nack(requeue=True) puts the message at the back (behind newer messages)
    nack_to_tail: bool = False
    #: every delivery is leased for this long unless `ack_timeout` says otherwise
    default_lease_seconds: float | None = None
    #: how leases and delays are rounded (e.g. SQS: whole seconds)
    round_lease: Callable[[float], float] | None = None
    round_delay: Callable[[float], float] | None = None
    #: a dropped consumer's leases stay taken until they run out (nobody tells the broker)
    leases_outlive_connection: bool = False
    #: every n-th message a group receives is stored twice (at-least-once duplicates)
    duplicate_every: int | None = None
    #: partitions per group: per-key order, one member per partition (None: one queue)
    partitions: int | None = None


def _duplicate_interval(capabilities: Capabilities) -> int | None:
    """One duplicate per this many messages: half the declared upper bound, so code that is
    not idempotent meets a duplicate in any test of a few hundred messages."""
    if capabilities.duplicate_fraction <= 0:
        return None
    return math.ceil(2 / capabilities.duplicate_fraction)


_SQS = Capabilities(
    ordering="none",
    ack_timeout=True,
    delay=True,
    wildcards=False,
    replays_history=False,
    nack=True,
    max_body_bytes=SQS_MAX_BODY_BYTES,
    max_delay_seconds=float(SQS_MAX_VISIBILITY_SECONDS),
    duplicate_fraction=0.01,
)
_KAFKA = Capabilities(
    ordering="per_key",
    ack_timeout=False,
    delay=True,
    wildcards=False,
    replays_history=False,  # `declare` starts a group at the topic's current end
    nack=True,
    max_body_bytes=1_000_000,
    max_delay_seconds=24 * 3600.0,
    duplicate_fraction=0.0,
)
_RABBITMQ = Capabilities(
    ordering="global",
    ack_timeout=True,
    delay=True,
    wildcards=True,
    replays_history=False,
    nack=True,
    max_body_bytes=16 * 1024 * 1024,
    max_delay_seconds=RABBITMQ_MAX_DELAY_MS / 1000,
    duplicate_fraction=0.0,
)
_REDIS = Capabilities(
    ordering="global",
    ack_timeout=True,
    delay=True,
    wildcards=True,
    replays_history=False,
    nack=True,
    max_body_bytes=16 * 1024 * 1024,
    max_delay_seconds=None,
    duplicate_fraction=0.0,
)

PROFILES: dict[str, Profile] = {
    "sqs": Profile(
        "sqs",
        _SQS,
        scramble_window=10,
        returns_to_tail=True,
        nack_to_tail=True,
        default_lease_seconds=SQS_DEFAULT_VISIBILITY_SECONDS,
        round_lease=whole_seconds,
        round_delay=whole_seconds,
        leases_outlive_connection=True,
        duplicate_every=_duplicate_interval(_SQS),
    ),
    "kafka": Profile("kafka", _KAFKA, nack_to_tail=True, partitions=KAFKA_DEFAULT_PARTITIONS),
    "rabbitmq": Profile(
        "rabbitmq", _RABBITMQ, returns_to_tail=True, nack_to_tail=True, round_delay=rabbitmq_delay
    ),
    "redis": Profile("redis", _REDIS),
}


class ProfileQueue(Queue):
    """A group of a profiled namespace: where returned and nacked messages go, what is next."""

    def __init__(
        self, namespace: ProfiledNamespace, binding: str, group: str, ephemeral: bool
    ) -> None:
        super().__init__(namespace, binding, group, ephemeral)
        self.profile = namespace.profile
        self.random = namespace.random
        self.received = 0  # messages this group got, for duplicate_every

    # all methods below run with namespace.lock held
    def add(self, entries: list[Entry]) -> None:
        """Newly published (or due) entries join the back."""
        self.ready.extend(entries)
        self.wakeup.notify(len(entries))

    def requeue(self, entries: Sequence[Entry]) -> None:
        """Entries that came back by themselves (close, dropped link, expired lease)."""
        if self.profile.returns_to_tail:
            self.add(sorted(entries, key=lambda e: e.seq))
        else:
            super().requeue(entries)

    def requeue_nacked(self, entries: Sequence[Entry]) -> None:
        if self.profile.nack_to_tail:
            self.add(sorted(entries, key=lambda e: e.seq))
        else:
            super().requeue(entries)

    def make_ready(self, entry: Entry) -> None:
        self.add([entry])

    def has_ready(self, consumer: Consumer) -> bool:
        return bool(self.ready)

    def take(self, consumer: Consumer) -> Entry | None:
        """The next entry for `consumer`, or None."""
        ready = self.ready
        if not ready:
            return None
        window = min(self.profile.scramble_window, len(ready))
        if window > 1:
            index = self.random.randrange(window)
            entry = ready[index]
            del ready[index]
            return entry
        return ready.popleft()

    def ready_count(self) -> int:
        return len(self.ready)

    def join(self, consumer: Consumer) -> None:
        """A member joined the group."""

    def leave(self, consumer: Consumer) -> None:
        """A member left the group."""


class PartitionedEntry(Entry):
    __slots__ = ("partition",)

    def __init__(self, message: Message, seq: int, partition: int) -> None:
        super().__init__(message, seq)
        self.partition = partition


class PartitionedQueue(ProfileQueue):
    """A Kafka-like group: partitions read in order, each by one member at a time."""

    def __init__(
        self, namespace: ProfiledNamespace, binding: str, group: str, ephemeral: bool
    ) -> None:
        super().__init__(namespace, binding, group, ephemeral)
        count = self.profile.partitions or 1
        self.partitions: list[deque[Entry]] = [deque() for _ in range(count)]
        self.members: list[Consumer] = []
        self.assignment: dict[Consumer, tuple[int, ...]] = {}

    def add(self, entries: list[Entry]) -> None:
        for entry in entries:
            self.partitions[entry.partition].append(entry)  # type: ignore[attr-defined]
        self.wakeup.notify_all()  # only the owner of a partition may take from it

    def requeue(self, entries: Sequence[Entry]) -> None:
        # not committed: the partition's owner reads them again first, in offset order
        for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
            self.partitions[entry.partition].appendleft(entry)  # type: ignore[attr-defined]
        self.wakeup.notify_all()

    def has_ready(self, consumer: Consumer) -> bool:
        partitions = self.partitions
        return any(partitions[p] for p in self.assignment.get(consumer, ()))

    def take(self, consumer: Consumer) -> Entry | None:
        # the oldest head among the member's partitions: each partition stays in order
        heads = [
            self.partitions[p] for p in self.assignment.get(consumer, ()) if self.partitions[p]
        ]
        if not heads:
            return None
        return min(heads, key=lambda d: d[0].seq).popleft()

    def ready_count(self) -> int:
        return sum(len(p) for p in self.partitions)

    def join(self, consumer: Consumer) -> None:
        self.members.append(consumer)
        self._rebalance()

    def leave(self, consumer: Consumer) -> None:
        if consumer in self.members:
            self.members.remove(consumer)
            self._rebalance()

    def _rebalance(self) -> None:
        """Round-robin assignment in join order; members beyond the partition count get none.
        A moved partition's handed-out messages stay with their old member until settled."""
        members = self.members
        self.assignment = {
            member: tuple(range(index, len(self.partitions), len(members)))
            for index, member in enumerate(members)
        }
        self.wakeup.notify_all()


class ProfiledNamespace(Namespace):
    """A namespace whose groups behave like one real broker's (see `Profile`)."""

    def __init__(self, name: str, profile: Profile) -> None:
        super().__init__(name)
        self.profile = profile
        self.random = random.Random()
        self._keyless = itertools.count()  # keyless messages spread over partitions one by one
        queue_class = PartitionedQueue if profile.partitions else ProfileQueue
        self._queue_class: type[ProfileQueue] = queue_class

    def _new_queue(self, binding: str, group: str, ephemeral: bool) -> Queue:
        return self._queue_class(self, binding, group, ephemeral)

    def consumer(self, queue: Queue, ack_timeout: float | None) -> Consumer:
        if ack_timeout is not None and self.profile.round_lease is not None:
            ack_timeout = self.profile.round_lease(ack_timeout)
        consumer = Consumer(queue, ack_timeout)
        with self.lock:
            queue.join(consumer)  # type: ignore[attr-defined]
        return consumer

    def depth(self, binding: str, group: str) -> int:
        with self.lock:
            queue = self.queues.get((binding, group))
            if not isinstance(queue, ProfileQueue):
                return 0
            return queue.ready_count() + len(queue.delayed) + len(queue.leased)

    def _partitions_of(self, messages: Sequence[Message]) -> list[int] | None:
        """Each message's partition, chosen once for every group as Kafka's producer does: the
        key's hash, or keyless messages spread one by one. None when not partitioned."""
        count = self.profile.partitions
        if not count:
            return None
        return [
            next(self._keyless) % count if m.key is None else zlib.crc32(m.key.encode()) % count
            for m in messages
        ]

    def _entries(
        self, queue: ProfileQueue, messages: Sequence[Message], partitions: list[int] | None
    ) -> list[Entry]:
        seq = self._seq
        entries: list[Entry]
        if partitions is None:
            entries = [Entry(m, next(seq)) for m in messages]
        else:
            entries = [PartitionedEntry(m, next(seq), p) for m, p in zip(messages, partitions)]
        every = self.profile.duplicate_every
        if every:
            for entry in list(entries):
                queue.received += 1
                if queue.received % every == 0:
                    copy = Entry(entry.message, next(seq))
                    if partitions is not None:
                        copy = PartitionedEntry(entry.message, copy.seq, entry.partition)  # type: ignore[attr-defined]
                    entries.append(copy)
        return entries

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        with self.lock:
            queues = self._route(topic)
            if not queues:
                return  # nobody subscribed: the message reaches nobody (the contract)
            for message in messages:
                message.topic = topic
            partitions = self._partitions_of(messages)
            for queue in queues:
                assert isinstance(queue, ProfileQueue)
                queue.add(self._entries(queue, messages, partitions))

    def lease(self, consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
        queue = consumer.queue
        assert isinstance(queue, ProfileQueue)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if consumer.closed:
                    return []
                now = time.monotonic()
                next_due = queue.reap(now) if (queue.delayed or queue.lease_deadlines) else None
                if queue.has_ready(consumer):
                    return self._take(queue, consumer, max_messages, now)
                remaining = deadline - now
                if remaining <= 0:
                    return []
                if next_due is not None:
                    remaining = min(remaining, max(0.0, next_due - now))
                queue.wakeup.wait(remaining)

    def _take(
        self, queue: ProfileQueue, consumer: Consumer, max_messages: int, now: float
    ) -> list[Message]:
        lease_deadline = now + consumer.ack_timeout if consumer.ack_timeout else None
        batch: list[Message] = []
        while len(batch) < max_messages:
            entry = queue.take(consumer)
            if entry is None:
                break
            entry.delivery_count += 1
            lease_id = next(self._lease_ids)
            queue.leased[lease_id] = Lease(entry, consumer, lease_deadline)
            consumer.leases.add(lease_id)
            if lease_deadline is not None:
                heapq.heappush(queue.lease_deadlines, (lease_deadline, lease_id))
            batch.append(entry.message._delivered_copy(entry.delivery_count, lease_id))
        if queue.ready_count():
            queue.wakeup.notify()  # more left: let another waiting consumer take some
        return batch

    def nack(self, consumer: Consumer, receipts: Sequence[int], delay: float | None) -> None:
        if delay and self.profile.round_delay is not None:
            delay = self.profile.round_delay(delay)
        queue = consumer.queue
        assert isinstance(queue, ProfileQueue)
        with self.lock:
            entries = self._release(consumer, receipts)
            if not delay:
                queue.requeue_nacked(entries)
                return
            due = time.monotonic() + delay
            for entry in entries:
                heapq.heappush(queue.delayed, (due, entry.seq, entry))
            queue.wakeup.notify_all()  # sleepers recompute their wake-up time

    def extend(self, consumer: Consumer, receipts: Sequence[int], seconds: float) -> None:
        if self.profile.round_lease is not None:
            seconds = self.profile.round_lease(seconds)
        super().extend(consumer, receipts, seconds)

    def disconnect(self, consumer: Consumer, *, closing: bool) -> None:
        queue = consumer.queue
        assert isinstance(queue, ProfileQueue)
        with self.lock:
            if closing:
                consumer.closed = True
                queue.leave(consumer)
            if closing or not self.profile.leases_outlive_connection:
                queue.requeue(self._release(consumer, list(consumer.leases)))
                queue.wakeup.notify_all()
                return
            # the broker never hears of the failure: the leases stay taken until they run out,
            # and the old receipts no longer settle anything
            abandoned = Consumer(queue, None)
            abandoned.closed = True
            without_deadline = []
            for lease_id in list(consumer.leases):
                lease = queue.leased[lease_id]
                lease.consumer = abandoned
                if lease.deadline is None:
                    without_deadline.append(lease_id)
            consumer.leases.clear()
            queue.requeue([queue.leased.pop(lease_id).entry for lease_id in without_deadline])
            queue.wakeup.notify_all()
