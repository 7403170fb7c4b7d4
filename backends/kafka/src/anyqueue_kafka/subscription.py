"""A Kafka consumer as an anyqueue subscription: leases, out-of-order acks, retries, rebalances.

One background thread (the poller) owns the confluent_kafka Consumer: it fetches into a bounded
buffer that `receive` hands out from, serves rebalance callbacks even while the user is not
receiving (an idle member would otherwise stall every rebalance of its group), and commits.

Acks may come in any order. Per partition the subscription tracks the offsets it fetched and
commits only the contiguous settled prefix (committed offset = first unsettled one), batched
every `commit_interval`, synchronously on revocation and on close. A message that was not
settled is never committed past, so it comes back to the group (librdkafka#1122).

Two modes:
- group: a member of the consumer group `<topic>:<group>`, subscribed to the topic and to the
  group's retry topic. `nack` produces a copy (attempt + 1, not-before time) to the retry topic,
  then settles the original. Delivery marks (an offsets-only group) record how far messages were
  handed out, so whoever gets a partition next counts the redeliveries.
- assigned: an explicit assignment with no group, never committing (ephemeral subscriptions and
  reply inboxes). A nack re-queues locally: the "group" lives and dies with this subscription.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from anyqueue.driver import SubscriptionDriver
from anyqueue.message import Message

from . import wire
from .admin import NO_OFFSET

if TYPE_CHECKING:
    from .driver import KafkaDriver

log = logging.getLogger("anyqueue.kafka")

#: longest wait inside one consume() call: bounds how late close(), commits and delays are noticed
POLL_SLICE = 0.1
#: consume() slice while every partition is paused (waiting for the buffer to drain)
PAUSED_SLICE = 0.02
#: records fetched per consume() call
FETCH_BATCH = 500
#: fetched messages buffered (count / bytes) before the poller pauses fetching
READY_LIMIT = 1000
READY_BYTES_LIMIT = 32 * 1024 * 1024
#: retry copies held back by their not-before time before the retry partitions are paused
DELAYED_LIMIT = 10_000

PartitionKey = tuple[str, int]


class _Track:
    """One partition of the current assignment: what was fetched, handed out and settled.

    A receipt is (track, offset); when the partition is revoked or lost the track dies, so acks
    of its messages are ignored (their partition belongs to someone else now)."""

    __slots__ = (
        "committed",
        "fetched",
        "handed",
        "inherited",
        "key",
        "live",
        "marked",
        "position",
        "settled",
    )

    def __init__(self, key: PartitionKey, inherited: int) -> None:
        self.key = key
        self.live = True
        self.fetched: deque[int] = deque()  # fetched offsets not yet settled, ascending
        self.settled: set[int] = set()  # settled offsets above the first unsettled one
        self.position: int | None = None  # the offset to commit: first unsettled (or next)
        self.committed: int | None = None
        self.handed = 0  # highest offset handed out + 1
        self.inherited = inherited  # below this, a previous owner handed messages out
        self.marked = inherited  # the delivery mark last recorded

    def fetch(self, offset: int) -> None:
        if self.position is None:
            self.position = offset
        self.fetched.append(offset)

    def settle(self, offset: int) -> None:
        if self.position is None or offset < self.position or offset in self.settled:
            return
        self.settled.add(offset)
        fetched, settled = self.fetched, self.settled
        while fetched and fetched[0] in settled:
            done = fetched.popleft()
            settled.discard(done)
            self.position = done + 1

    def unsettled_handed(self) -> bool:
        """Whether a message handed out from this partition is still unsettled."""
        return bool(self.fetched) and self.fetched[0] < self.handed


@dataclass(frozen=True)
class GroupTarget:
    """What a group-mode subscription consumes and where it records things."""

    group_id: str
    marks_group_id: str
    retry_topic: str


class KafkaSubscription(SubscriptionDriver):
    """A group member (`group` given) or an assigned consumer (`assignment` given)."""

    # settling is an in-memory update here; commits are batched by this class itself
    ack_batch_size = 1

    def __init__(
        self,
        driver: KafkaDriver,
        config: dict[str, Any],
        *,
        topic: str,
        group: GroupTarget | None = None,
        assignment: list[TopicPartition] | None = None,
        on_close: Callable[[KafkaSubscription], None] | None = None,
    ) -> None:
        if (group is None) == (assignment is None):
            raise ValueError("give exactly one of group and assignment")
        self._driver = driver
        self._topic = topic
        self._group = group
        self._on_close = on_close
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ready: deque[Message] = deque()
        self._ready_bytes = 0
        self._delayed: list[tuple[float, int, Message]] = []  # (not_before, seq, message)
        self._sequence = itertools.count()
        self._tracks: dict[PartitionKey, _Track] = {}
        self._closed = False
        self._revoking: set[PartitionKey] = set()
        self._failure: BaseException | None = None
        self._joined = False  # group mode: the first assignment arrived
        self._paused_all = False
        self._paused_retry = False
        self._last_commit = time.monotonic()
        self._commit_interval = driver.options.commit_interval
        self._grace = driver.options.rebalance_grace
        self._consumer = Consumer(config)
        try:
            if group is not None:
                self._consumer.subscribe(
                    [topic, group.retry_topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
            else:
                assert assignment is not None
                for tp in assignment:
                    self._tracks[(tp.topic, tp.partition)] = _Track((tp.topic, tp.partition), 0)
                self._consumer.assign(assignment)
        except BaseException:
            self._consumer.close()
            raise
        self._poller = threading.Thread(
            target=self._poll_forever, name=f"anyqueue-kafka-{topic}", daemon=True
        )
        self._poller.start()
        if group is not None:
            self._wait_for_assignment(driver.options.timeout + driver.options.session_timeout)

    def _wait_for_assignment(self, timeout: float) -> None:
        """Return once this member has joined its group (its assignment may be empty), so that
        competing members are all in place when subscribe() returns; after `timeout` the join
        simply continues in the background."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self._joined or self._closed or self._failure is not None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.info("anyqueue: still joining the group of %r; continuing", self._topic)
                    return
                self._changed.wait(remaining)

    # -- the user's side ---------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._ready:
                if self._failure is not None:
                    raise self._failure
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return []
                self._changed.wait(remaining)
            if self._closed:
                return []
            count = min(max_messages, len(self._ready))
            batch = [self._ready.popleft() for _ in range(count)]
            for message in batch:
                self._ready_bytes -= len(message.body)
                track, offset = message.receipt
                if offset >= track.handed:
                    track.handed = offset + 1
        return batch

    def ack(self, messages: Sequence[Message]) -> None:
        with self._lock:
            for message in messages:
                track, offset = message.receipt
                if track.live:
                    track.settle(offset)
            if self._revoking:
                self._changed.notify_all()

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        live = [m for m in messages if m.receipt[0].live]
        if not live:
            return
        not_before = None if not delay else time.time() + delay
        if self._group is None:
            self._requeue_locally(live, not_before)
            return
        # the copy first: if producing fails, the original stays unsettled and comes back
        self._driver._produce(
            self._group.retry_topic,
            [
                (
                    wire.encode_key(m.key),
                    m.body,
                    wire.retry_headers(m, attempt=m.delivery_count + 1, not_before=not_before),
                )
                for m in live
            ],
        )
        self.ack(live)

    def _requeue_locally(self, messages: list[Message], not_before: float | None) -> None:
        with self._lock:
            for message in messages:
                again = Message(
                    message.body,
                    key=message.key,
                    headers=message.headers,
                    id=message.id,
                    content_type=message.content_type,
                    correlation_id=message.correlation_id,
                    reply_to=message.reply_to,
                    topic=message.topic,
                    delivery_count=message.delivery_count + 1,
                    redelivered=True,
                    receipt=message.receipt,
                )
                if not_before is None:
                    self._ready.append(again)
                    self._ready_bytes += len(again.body)
                else:
                    heapq.heappush(self._delayed, (not_before, next(self._sequence), again))
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        if threading.current_thread() is not self._poller:
            self._poller.join()
        try:
            if self._group is not None:
                self._give_back(list(self._tracks), wait=False)
            self._consumer.close()
        except KafkaException as err:
            log.warning("anyqueue: closing the Kafka consumer of %r: %s", self._topic, err)
        finally:
            if self._on_close is not None:
                self._on_close(self)

    # -- the poller -------------------------------------------------------------------------------
    def _poll_forever(self) -> None:
        consumer = self._consumer
        try:
            while not self._closed:
                if self._group is not None and (
                    time.monotonic() - self._last_commit >= self._commit_interval
                ):
                    self._commit(wait=False)
                wait = self._release_due()
                wait = min(wait, self._flow_control())
                # consume(n, t) waits for n records or t seconds: poll for the first one, which
                # returns as soon as it arrives, then take whatever else is already there
                first = consumer.poll(wait)
                if first is not None:
                    self._accept([first, *consumer.consume(FETCH_BATCH - 1, 0)])
        except BaseException as err:  # a fatal client error: receive() reports it
            log.error("anyqueue: Kafka consumer of %r failed: %s", self._topic, err)
            with self._changed:
                self._failure = err
                self._changed.notify_all()

    def _accept(self, records: list[Any]) -> None:
        """Decode fetched records into the ready buffer (or the delay heap), record their
        offsets, and (group mode) record the delivery marks before anything is handed out."""
        now = time.time()
        decoded: list[wire.Received] = []
        reached: dict[_Track, int] = {}
        tracks = self._tracks
        for record in records:
            error = record.error()
            if error is not None:
                self._record_error(error)
                continue
            track = tracks.get((record.topic(), record.partition()))
            if track is None or not track.live:
                continue  # fetched just before its partition was revoked
            offset = record.offset()
            received = wire.decode(record, (track, offset))
            if offset < track.inherited:
                message = received.message
                message.delivery_count += 1
                message.redelivered = True
            decoded.append(received)
            reached[track] = offset + 1
        if not decoded:
            return
        if self._group is not None:
            self._mark(
                {t.key: end for t, end in reached.items() if end > t.marked},
                {t.key: t for t in reached},
            )
        with self._changed:
            for received in decoded:
                message = received.message
                message.receipt[0].fetch(message.receipt[1])
                if received.not_before > now:
                    heapq.heappush(
                        self._delayed, (received.not_before, next(self._sequence), message)
                    )
                else:
                    self._ready.append(message)
                    self._ready_bytes += len(message.body)
            self._changed.notify_all()

    def _record_error(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("anyqueue: Kafka consumer of %r: %s", self._topic, error)

    def _release_due(self) -> float:
        """Move retry copies whose time has come to the ready buffer; return how long the
        poller may wait before the next one is due."""
        if not self._delayed:
            return POLL_SLICE
        now = time.time()
        with self._changed:
            released = False
            while self._delayed and self._delayed[0][0] <= now:
                _, _, message = heapq.heappop(self._delayed)
                if message.receipt[0].live:
                    self._ready.append(message)
                    self._ready_bytes += len(message.body)
                    released = True
            if released:
                self._changed.notify_all()
            wait = self._delayed[0][0] - now if self._delayed else POLL_SLICE
        return max(0.0, min(POLL_SLICE, wait))

    def _flow_control(self) -> float:
        """Pause fetching while the buffer is full (and the retry topic while too many copies
        wait for their time); return the consume() wait that fits."""
        full = len(self._ready) >= READY_LIMIT or self._ready_bytes >= READY_BYTES_LIMIT
        drained = len(self._ready) < READY_LIMIT // 2 and self._ready_bytes < READY_BYTES_LIMIT // 2
        try:
            assignment = self._consumer.assignment()
            if full or (self._paused_all and not drained):
                self._consumer.pause(assignment)  # again: a rebalance may have added partitions
                self._paused_all = True
                return PAUSED_SLICE
            if self._paused_all:
                self._consumer.resume(assignment)
                self._paused_all = False
            if self._group is not None:
                retry = [tp for tp in assignment if tp.topic == self._group.retry_topic]
                crowded = len(self._delayed) >= DELAYED_LIMIT
                if crowded:
                    self._consumer.pause(retry)
                elif self._paused_retry:
                    self._consumer.resume(retry)
                self._paused_retry = crowded
        except KafkaException as err:  # e.g. a partition revoked in between: next round
            log.debug("anyqueue: pause/resume on %r: %s", self._topic, err)
        return POLL_SLICE

    # -- commits and delivery marks ---------------------------------------------------------------
    def _commit(self, *, wait: bool, keys: Sequence[PartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
        with self._lock:
            chosen = [self._tracks[k] for k in keys] if keys is not None else self._tracks.values()
            due = [
                t for t in chosen if t.position is not None and (wait or t.position != t.committed)
            ]
            offsets = [TopicPartition(t.key[0], t.key[1], t.position) for t in due]
            for track in due:
                track.committed = track.position
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not wait)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("anyqueue: committing offsets of %r failed: %s", self._topic, err)

    def _mark(self, marks: dict[PartitionKey, int], tracks: dict[PartitionKey, _Track]) -> None:
        """Record delivery marks (offsets below which messages were handed out) before the
        messages are: if this member dies, the next owner counts them as redelivered."""
        if not marks or self._group is None:
            return
        try:
            self._driver.cluster.set_offsets(self._group.marks_group_id, marks)
        except Exception as err:
            log.warning("anyqueue: recording delivery marks of %r failed: %s", self._topic, err)
            return
        for key, mark in marks.items():
            tracks[key].marked = mark

    # -- rebalances (called on the poller thread, inside consume()) -------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._group is not None
        keys = [(tp.topic, tp.partition) for tp in partitions]
        inherited: dict[PartitionKey, int] = {}
        try:
            inherited = self._driver.cluster.offsets(self._group.marks_group_id, keys)
        except Exception as err:
            log.warning("anyqueue: reading delivery marks of %r failed: %s", self._topic, err)
        with self._lock:
            for key in keys:
                mark = inherited.get(key, NO_OFFSET)
                self._tracks[key] = _Track(key, max(mark, 0))
            self._joined = True
            self._changed.notify_all()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_back([(tp.topic, tp.partition) for tp in partitions], wait=not self._closed)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the group already gave these partitions to others: our commits would be refused
        with self._lock:
            self._forget([(tp.topic, tp.partition) for tp in partitions])

    def _give_back(self, keys: list[PartitionKey], *, wait: bool) -> None:
        """Hand partitions back to the group: drop what was not handed out, give in-flight
        messages up to `rebalance_grace` to be settled, commit, record the delivery marks."""
        keys = [k for k in keys if k in self._tracks]
        if not keys:
            return
        with self._changed:
            self._drop_unhanded(set(keys))
            if wait:
                deadline = time.monotonic() + self._grace
                self._revoking.update(keys)
                try:
                    while not self._closed and any(
                        self._tracks[k].unsettled_handed() for k in keys
                    ):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._changed.wait(remaining)
                finally:
                    self._revoking.difference_update(keys)
        self._commit(wait=True, keys=keys)
        with self._lock:
            tracks = {k: self._tracks[k] for k in keys}
            self._forget(keys)
        marks = {
            k: max(t.inherited, t.handed, t.position or 0)
            for k, t in tracks.items()
            if max(t.inherited, t.handed, t.position or 0) != t.marked
        }
        self._mark(marks, tracks)

    def _forget(self, keys: Sequence[PartitionKey]) -> None:
        """Kill the tracks of partitions that are no longer ours (lock held)."""
        dropped = set(keys)
        self._drop_unhanded(dropped)
        for key in dropped:
            track = self._tracks.pop(key, None)
            if track is not None:
                track.live = False

    def _drop_unhanded(self, keys: set[PartitionKey]) -> None:
        """Drop buffered messages of these partitions: not handed out, so the next owner
        delivers them (lock held)."""
        if any(m.receipt[0].key in keys for m in self._ready):
            kept = deque(m for m in self._ready if m.receipt[0].key not in keys)
            self._ready = kept
            self._ready_bytes = sum(len(m.body) for m in kept)
        if any(entry[2].receipt[0].key in keys for entry in self._delayed):
            self._delayed = [e for e in self._delayed if e[2].receipt[0].key not in keys]
            heapq.heapify(self._delayed)
