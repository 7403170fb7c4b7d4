"""A Kafka consumer as an anyqueue subscription: leases, out-of-order acks, retries, rebalances.

Whoever receives polls: `receive` hands out buffered records and, with none left, polls the
confluent_kafka Consumer on its own thread, so nothing stands between the client library and the
receiver (a hand-off between Python threads costs a GIL switch, milliseconds under load). A
keeper thread polls only when no receive() has for a while, because an idle member must still
serve its group's rebalances (it would stall every one of them), commit, and release delayed
messages. Fetched records are buffered in runs of one partition and become Messages when handed
out; a Message decodes its headers when one of its attributes other than the body is first read.

Acks may come in any order. Per partition the subscription remembers the fetched offsets not
yet settled and commits the lowest of them (or, with none left, the next offset to fetch): the
contiguous settled prefix. Commits are batched every `commit_interval`, and made synchronously
on revocation and on close. An unsettled message is never committed past, so it comes back to
the group (librdkafka#1122, confluent-kafka-go#1179).

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
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, is_not, itemgetter, methodcaller
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from anyqueue.driver import SubscriptionDriver
from anyqueue.message import Message

from . import wire
from .admin import NO_OFFSET

if TYPE_CHECKING:
    from .driver import KafkaDriver

log = logging.getLogger("anyqueue.kafka")

#: longest wait inside one poll() call: bounds how late close(), commits and delays are noticed
POLL_SLICE = 0.05
#: the keeper polls when no receive() has polled for this long
IDLE_GAP = 0.1
KEEPER_INTERVAL = 0.05
#: records fetched per poll round
FETCH_BATCH = 500
#: fetched messages buffered (count / bytes) before polling stops taking records
READY_LIMIT = 2000
READY_BYTES_LIMIT = 16 * 1024 * 1024
#: retry copies held back by their not-before time before the retry partitions are paused
DELAYED_LIMIT = 10_000

#: delivery marks are requested, asynchronously, this far past the records fetched, so that they
#: cost a request per this many messages (at most four) rather than per fetch; the next one is
#: requested once fetching has gone a quarter of this past the last request. A record is handed
#: out only below its partition's recorded mark, so a receiver waits only when it overtakes the
#: confirmations. Close and revocation record exact marks: only after a crash may up to this
#: many never handed-out messages (plus those buffered) count as redelivered.
MARK_AHEAD = 1000
#: how often a receiver waiting for a requested delivery mark checks for its confirmation
MARK_WAIT_SLICE = 0.001

PartitionKey = tuple[str, int]


class _Track:
    """One partition of the current assignment: what was fetched, handed out and settled.

    A receipt is (track, offset); when the partition is revoked or lost the track dies, so acks
    of its messages are ignored (their partition belongs to someone else now)."""

    __slots__ = (
        "committed",
        "end",
        "handed",
        "inherited",
        "key",
        "live",
        "marked",
        "requested",
        "unsettled",
    )

    def __init__(self, key: PartitionKey, inherited: int) -> None:
        self.key = key
        self.live = True
        self.unsettled: set[int] = set()  # fetched offsets not yet settled
        self.end: int | None = None  # the offset after the last one fetched
        self.committed: int | None = None
        self.handed = 0  # highest offset handed out + 1
        self.inherited = inherited  # below this, a previous owner handed messages out
        self.marked = inherited  # the delivery mark last recorded
        self.requested = inherited  # the highest mark asked for (recorded or on its way)

    def position(self) -> int | None:
        """The offset to commit: the lowest unsettled one, else the next to fetch."""
        return min(self.unsettled) if self.unsettled else self.end

    def unsettled_handed(self) -> bool:
        """Whether a message handed out from this partition is still unsettled."""
        handed = self.handed
        return any(offset < handed for offset in self.unsettled)


def _decode(record: Any, track: _Track, offset: int) -> Message:
    message = wire.decode(record, (track, offset))
    if offset < track.inherited:  # a previous owner handed it out already
        message.delivery_count += 1
        message.redelivered = True
    return message


#: a delivery waiting for its time: its track, offset, body size and Message
_Item = tuple[_Track, int, int, Message]


class _Run:
    """Deliveries of one partition in increasing offset order, handed out from `start` on:
    raw records, or (`built`) Messages (local requeues, retry copies)."""

    __slots__ = ("built", "ends", "offsets", "payloads", "start", "track")

    def __init__(
        self,
        track: _Track,
        offsets: list[int],
        payloads: list[Any],
        sizes: Sequence[int],
        *,
        built: bool,
    ) -> None:
        self.track = track
        self.offsets = offsets
        self.payloads = payloads
        self.ends = list(itertools.accumulate(sizes))  # bytes up to and including each one
        self.start = 0
        self.built = built


#: a part of a run taken to be handed out: track, offsets, payloads, built
_Piece = tuple[_Track, list[int], list[Any], bool]


class _Ready:
    """Fetched deliveries not yet handed out, as runs of one partition each, so that taking
    them costs a few operations per run rather than per message. `gated` (group mode): a
    delivery is handed out only below its partition's recorded delivery mark. The lock is held
    for all."""

    __slots__ = ("count", "gated", "runs", "size")

    def __init__(self, *, gated: bool) -> None:
        self.runs: deque[_Run] = deque()
        self.count = 0
        self.size = 0  # bytes
        self.gated = gated

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, run: _Run) -> None:
        if run.offsets:
            self.runs.append(run)
            self.count += len(run.offsets)
            self.size += run.ends[-1]

    def take(self, wanted: int) -> list[_Piece]:
        """Up to `wanted` deliveries, oldest first (skipping partitions that wait for their
        delivery mark); their tracks count them as handed out."""
        pieces: list[_Piece] = []
        runs = self.runs
        waiting: list[_Run] = []  # runs held back by their mark, kept in front
        while wanted > 0 and runs:
            run = runs.popleft()
            track, all_offsets = run.track, run.offsets
            start, length = run.start, len(all_offsets)
            stop = min(length, start + wanted)
            if self.gated and all_offsets[stop - 1] >= track.marked:
                stop = bisect_left(all_offsets, track.marked, start, stop)  # offsets increase
            if stop > start:
                if start == 0 and stop == length:
                    offsets, payloads = all_offsets, run.payloads
                else:
                    offsets, payloads = all_offsets[start:stop], run.payloads[start:stop]
                ends = run.ends
                self.size -= ends[stop - 1] - (ends[start - 1] if start else 0)
                self.count -= stop - start
                wanted -= stop - start
                if offsets[-1] >= track.handed:
                    track.handed = offsets[-1] + 1
                pieces.append((track, offsets, payloads, run.built))
            if stop < length:
                run.start = stop
                if wanted > 0:  # stopped by the mark
                    waiting.append(run)
                else:
                    runs.appendleft(run)
        runs.extendleft(reversed(waiting))
        return pieces

    def waiting_for_marks(self) -> list[_Track]:
        """The partitions whose next delivery waits for a delivery mark to be recorded."""
        if not self.gated:
            return []
        return list(
            {run.track: None for run in self.runs if run.offsets[run.start] >= run.track.marked}
        )

    def drop(self, keys: set[PartitionKey]) -> None:
        """Forget the deliveries of these partitions."""
        if any(run.track.key in keys for run in self.runs):
            self.runs = deque(run for run in self.runs if run.track.key not in keys)
            self.count = sum(len(run.offsets) - run.start for run in self.runs)
            self.size = sum(
                run.ends[-1] - (run.ends[run.start - 1] if run.start else 0) for run in self.runs
            )


_error = methodcaller("error")
_topic = methodcaller("topic")
_partition = methodcaller("partition")
_offset = methodcaller("offset")
_receipt = attrgetter("receipt")
_receipt_track = itemgetter(0)
_receipt_offset = itemgetter(1)


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
        self._ready = _Ready(gated=group is not None)
        self._waiting_since: float | None = None  # receivers have waited for marks since
        self._delayed: list[tuple[float, int, _Item]] = []  # (not_before, sequence, item)
        self._sequence = itertools.count()
        self._tracks: dict[PartitionKey, _Track] = {}
        self._closed = False
        self._revoking = False
        self._failure: BaseException | None = None
        self._joined = False  # group mode: the first assignment arrived
        self._full_since: float | None = None  # the buffer has been full since then
        self._paused_all = False
        self._paused_retry = False
        self._last_commit = time.monotonic()
        self._commit_interval = driver.options.commit_interval
        self._grace = driver.options.rebalance_grace
        self._consumer = Consumer(config)
        # delivery marks: offsets of a member-less group, committed and read through the
        # consumer protocol (the admin client's requests can crash the process when a
        # connection dies under them: librdkafka asserts in rd_kafka_enq_once_del_source)
        self._marks: Consumer | None = None
        if group is not None:
            marks_config = {k: v for k, v in config.items() if k != "on_commit"}
            self._marks = Consumer(
                {**marks_config, "group.id": group.marks_group_id, "on_commit": self._on_marked}
            )
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
            if self._marks is not None:
                self._marks.close()
            raise
        self._poll_lock = threading.Lock()  # one thread at a time polls the consumer
        self._last_poll = 0.0
        self._stopping = threading.Event()
        self._keeper = threading.Thread(
            target=self._keep, name=f"anyqueue-kafka-{topic}", daemon=True
        )
        self._keeper.start()
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
        """Hand out buffered messages; with none buffered, poll the consumer on this thread
        (unless another thread is polling), so no other thread stands between the client
        library and the receiver."""
        deadline = time.monotonic() + timeout
        first_round = True
        while True:
            marks_due = False  # all that is buffered waits for delivery marks
            with self._changed:
                if self._failure is not None:
                    raise self._failure
                if self._closed:
                    return []
                if self._ready:
                    pieces = self._ready.take(max_messages)
                    if pieces:
                        self._waiting_since = None
                        break
                    marks_due = True
                    if self._waiting_since is None:
                        self._waiting_since = time.monotonic()
            remaining = deadline - time.monotonic()
            # even with no time left, a mark on its way gets one short wait: it is due any moment
            if remaining <= 0 and not (marks_due and first_round):
                return []
            first_round = False
            if self._poll_lock.acquire(blocking=False):
                try:
                    if marks_due and not self._closed:
                        # fetch on meanwhile (without waiting): the marks of what it brings
                        # are requested now, so later receivers find them recorded
                        self._poll_once(0)
                        self._await_marks()
                    elif not self._closed:
                        self._poll_once(min(remaining, POLL_SLICE))
                finally:
                    self._poll_lock.release()
            else:
                with self._changed:
                    if marks_due:
                        self._changed.wait(max(0.0, min(remaining, MARK_WAIT_SLICE)))
                    elif not (self._ready or self._closed):
                        self._changed.wait(min(remaining, POLL_SLICE))
        messages: list[Message] = []
        received = wire.received
        repeat = itertools.repeat
        for track, offsets, payloads, built in pieces:
            if built:
                messages += payloads
                continue
            # below `inherited` a previous owner handed the records out already
            cut = bisect_left(offsets, track.inherited) if offsets[0] < track.inherited else 0
            if cut:
                messages += received(
                    payloads[:cut], zip(repeat(track), offsets[:cut]), inherited=True
                )
                offsets, payloads = offsets[cut:], payloads[cut:]
            if offsets:
                messages += received(payloads, zip(repeat(track), offsets), inherited=False)
        return messages

    def ack(self, messages: Sequence[Message]) -> None:
        receipts = list(map(_receipt, messages))
        with self._lock:
            tracks = set(map(_receipt_track, receipts))
            if len(tracks) == 1:  # the usual batch: one partition's run, settled at once
                (track,) = tracks
                if track.live:
                    track.unsettled.difference_update(map(_receipt_offset, receipts))
            else:
                for track, offset in receipts:
                    if track.live:
                        track.unsettled.discard(offset)
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
            live,
            [
                wire.retry_headers(m, attempt=m.delivery_count + 1, not_before=not_before)
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
                track, offset = message.receipt
                item: _Item = (track, offset, len(again.body), again)
                if not_before is None:
                    self._ready.add(_Run(track, [offset], [again], [item[2]], built=True))
                else:
                    heapq.heappush(self._delayed, (not_before, next(self._sequence), item))
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._stopping.set()
        if threading.current_thread() is not self._keeper:
            self._keeper.join()
        try:
            with self._poll_lock:  # a receive() may be inside poll() for a moment longer
                if self._group is not None:
                    self._give_back(list(self._tracks), wait=False)
                self._consumer.close()
                if self._marks is not None:
                    self._marks.close()
        except KafkaException as err:
            log.warning("anyqueue: closing the Kafka consumer of %r: %s", self._topic, err)
        finally:
            if self._on_close is not None:
                self._on_close(self)

    # -- polling -----------------------------------------------------------------------------------
    def _keep(self) -> None:
        """Poll whenever no receive() has for a while: an idle member must still serve its
        group's rebalances, commit, and release delayed messages when they are due."""
        while not self._stopping.wait(KEEPER_INTERVAL):
            if time.monotonic() - self._last_poll < IDLE_GAP:
                continue
            if self._poll_lock.acquire(blocking=False):
                try:
                    if not self._closed:
                        self._poll_once(KEEPER_INTERVAL)
                finally:
                    self._poll_lock.release()

    def _poll_once(self, wait: float) -> None:
        """One round with the consumer (poll lock held): commit if due, release due delayed
        messages, fetch what arrives within `wait`, serve callbacks. A client error that
        poll() raises is fatal: receive() reports it from then on."""
        self._last_poll = time.monotonic()
        consumer = self._consumer
        try:
            if self._group is not None and (
                self._last_poll - self._last_commit >= self._commit_interval
            ):
                self._commit(wait=False)
            wait = min(wait, self._release_due())
            self._flow_control()
            full = self._full_since is not None
            # consume(n, t) waits for n records or t seconds: poll for the first one, which
            # returns as soon as it arrives, then take whatever else is already there; with
            # the buffer full only serve callbacks (and take at most that one record)
            first = consumer.poll(0 if full else wait)
            if first is not None:
                self._accept([first, *([] if full else consumer.consume(FETCH_BATCH - 1, 0))])
        except Exception as err:
            log.error("anyqueue: Kafka consumer of %r failed: %s", self._topic, err)
            with self._changed:
                self._failure = err
                self._changed.notify_all()
        finally:
            self._last_poll = time.monotonic()

    def _accept(self, records: list[Any]) -> None:
        """Buffer fetched records (retry copies not yet due go to the delay heap), remember
        their offsets as unsettled and (group mode) request the delivery marks they need.

        Records come in runs of one partition with increasing offsets: each field is read for
        the whole batch at once, and the rest is done per run."""
        errors = list(map(_error, records))
        # not errors.count(None): comparing a KafkaError with None leaves a Python error set
        if any(map(is_not, errors, itertools.repeat(None))):
            for error in errors:
                if error is not None:
                    self._record_error(error)
            records = [record for record, error in zip(records, errors) if error is None]
            if not records:
                return
        topics = list(map(_topic, records))
        partitions = list(map(_partition, records))
        offsets = list(map(_offset, records))
        sizes = list(map(len, records))
        count = len(records)
        if topics.count(topics[0]) == count and partitions.count(partitions[0]) == count:
            bounds = [(0, count)]
        else:
            bounds = []
            start = 0
            for _, same_partition in itertools.groupby(zip(topics, partitions)):
                stop = start + len(list(same_partition))
                bounds.append((start, stop))
                start = stop
        runs: list[_Run] = []
        waiting: list[tuple[float, _Item]] = []
        reached: dict[_Track, int] = {}
        tracks = self._tracks
        retry_topic = self._group.retry_topic if self._group is not None else None
        for start, stop in bounds:
            key = (topics[start], partitions[start])
            track = tracks.get(key)
            if track is None or not track.live:
                continue  # fetched just before its partition was revoked
            if count == stop - start:
                run_offsets, run_records, run_sizes = offsets, records, sizes
            else:
                run_offsets = offsets[start:stop]
                run_records = records[start:stop]
                run_sizes = sizes[start:stop]
            reached[track] = run_offsets[-1] + 1
            if key[0] == retry_topic:
                runs.append(self._retry_run(track, run_records, run_offsets, waiting))
            else:
                runs.append(_Run(track, run_offsets, run_records, run_sizes, built=False))
        if not reached:
            return
        if self._group is not None:
            self._mark_ahead(reached)
        with self._changed:
            if self._group is not None:
                for run in runs:
                    run.track.unsettled.update(run.offsets)
                for _, item in waiting:
                    item[0].unsettled.add(item[1])
                for track, end in reached.items():
                    track.end = end
            for not_before, item in waiting:
                heapq.heappush(self._delayed, (not_before, next(self._sequence), item))
            for run in runs:
                self._ready.add(run)
            self._changed.notify_all()

    def _retry_run(
        self,
        track: _Track,
        records: list[Any],
        offsets: list[int],
        waiting: list[tuple[float, _Item]],
    ) -> _Run:
        """Retry copies: decoded now; those not yet due go to `waiting`, the rest in a run."""
        now = time.time()
        due_offsets: list[int] = []
        due_messages: list[Any] = []
        due_sizes: list[int] = []
        for record, offset in zip(records, offsets):
            message = _decode(record, track, offset)
            not_before = wire.not_before(record)
            if not_before > now:
                waiting.append((not_before, (track, offset, len(message.body), message)))
            else:
                due_offsets.append(offset)
                due_messages.append(message)
                due_sizes.append(len(message.body))
        return _Run(track, due_offsets, due_messages, due_sizes, built=True)

    def _record_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("anyqueue: Kafka consumer of %r: %s", self._topic, error)

    def _release_due(self) -> float:
        """Move retry copies whose time has come to the ready buffer; return how long a poll
        may wait before the next one is due."""
        if not self._delayed:
            return POLL_SLICE
        now = time.time()
        with self._changed:
            released = False
            while self._delayed and self._delayed[0][0] <= now:
                _, _, (track, offset, size, message) = heapq.heappop(self._delayed)
                if track.live:
                    self._ready.add(_Run(track, [offset], [message], [size], built=True))
                    released = True
            if released:
                self._changed.notify_all()
            wait = self._delayed[0][0] - now if self._delayed else POLL_SLICE
        return max(0.0, min(POLL_SLICE, wait))

    def _flow_control(self) -> None:
        """Stop taking records while the buffer is full; pause the partitions only when it
        stays full (pausing makes librdkafka drop what it prefetched); pause the retry topic
        while too many copies wait for their time."""
        count, size = self._ready.count, self._ready.size
        if count >= READY_LIMIT or size >= READY_BYTES_LIMIT:
            if self._full_since is None:
                self._full_since = time.monotonic()
        elif count < READY_LIMIT // 2 and size < READY_BYTES_LIMIT // 2:
            self._full_since = None
        try:
            idle = self._full_since is not None and time.monotonic() - self._full_since > 1.0
            if idle:
                # again each round: a rebalance may have added partitions
                self._consumer.pause(self._consumer.assignment())
                self._paused_all = True
            elif self._paused_all and self._full_since is None:
                self._consumer.resume(self._consumer.assignment())
                self._paused_all = False
            if self._group is not None:
                crowded = len(self._delayed) >= DELAYED_LIMIT
                if crowded or self._paused_retry:
                    retry = [
                        tp
                        for tp in self._consumer.assignment()
                        if tp.topic == self._group.retry_topic
                    ]
                    if crowded:
                        self._consumer.pause(retry)
                    elif not self._paused_all:
                        self._consumer.resume(retry)
                    self._paused_retry = crowded
        except KafkaException as err:  # e.g. a partition revoked in between: next round
            log.debug("anyqueue: pause/resume on %r: %s", self._topic, err)

    # -- commits and delivery marks ----------------------------------------------------------------
    def _commit(self, *, wait: bool, keys: Sequence[PartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
        offsets = []
        with self._lock:
            chosen = [self._tracks[k] for k in keys] if keys is not None else self._tracks.values()
            for track in chosen:
                position = track.position()
                if position is not None and (wait or position != track.committed):
                    offsets.append(TopicPartition(track.key[0], track.key[1], position))
                    track.committed = position
        if not offsets:
            return
        try:
            if wait:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("anyqueue: committing offsets of %r failed: %s", self._topic, err)

    def _mark_ahead(self, reached: dict[_Track, int]) -> None:
        """Request the delivery marks that the records just fetched need before they are handed
        out, asynchronously and well ahead, so that a receiver seldom waits for one."""
        marks = self._marks
        if marks is None:
            return
        marks.poll(0)  # confirmations of marks requested earlier: _on_marked
        self._request_marks(
            {
                track: end + MARK_AHEAD
                for track, end in reached.items()
                if track.requested - end < MARK_AHEAD - MARK_AHEAD // 4
            }
        )

    def _request_marks(self, wanted: dict[_Track, int]) -> None:
        if not wanted or self._marks is None:
            return
        offsets = [TopicPartition(t.key[0], t.key[1], mark) for t, mark in wanted.items()]
        try:
            self._marks.commit(offsets=offsets, asynchronous=True)
        except KafkaException as err:
            log.warning("anyqueue: recording delivery marks of %r failed: %s", self._topic, err)
            return
        for track, mark in wanted.items():
            track.requested = max(track.requested, mark)

    def _await_marks(self) -> None:
        """Receivers found only records past their partitions' recorded delivery marks (poll
        lock held): ask again where a request failed, and wait a moment for confirmations. A
        mark still missing after `timeout` is recorded synchronously or, failing that, given up
        on (with a warning), so that consuming never stalls on delivery marks."""
        with self._lock:
            waiting = self._ready.waiting_for_marks()
        self._request_marks(
            {t: (t.end or 0) + MARK_AHEAD for t in waiting if t.live and t.requested <= t.marked}
        )
        assert self._marks is not None
        self._marks.poll(MARK_WAIT_SLICE)
        since = self._waiting_since
        if since is not None and time.monotonic() - since >= self._driver.options.timeout:
            with self._lock:
                waiting = [t for t in self._ready.waiting_for_marks() if t.live]
            self._mark({t.key: (t.end or 0) + MARK_AHEAD for t in waiting}, waiting, give_up=True)
        with self._changed:
            self._changed.notify_all()

    def _on_marked(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """A requested delivery mark was recorded, or not: called by the marks consumer's
        poll(), on the polling thread."""
        if error is not None:
            log.warning("anyqueue: recording delivery marks of %r failed: %s", self._topic, error)
        for tp in partitions:
            track = self._tracks.get((tp.topic, tp.partition))
            if track is None:
                continue
            if error is None and tp.error is None:
                track.marked = max(track.marked, tp.offset)
            else:  # not recorded: asked for again by the next fetch or a waiting receiver
                track.requested = track.marked

    def _mark(self, marks: dict[PartitionKey, int], tracks: Any, *, give_up: bool = False) -> None:
        """Record delivery marks (offsets below which messages were handed out) before the
        messages are: if this member dies, the next owner counts them as redelivered.
        `give_up`: if recording fails, hand the messages out all the same."""
        if not marks or self._marks is None:
            return
        offsets = [
            TopicPartition(topic, partition, mark) for (topic, partition), mark in marks.items()
        ]
        try:
            self._marks.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            log.warning("anyqueue: recording delivery marks of %r failed: %s", self._topic, err)
            if not give_up:
                return
            log.warning(
                "anyqueue: handing out messages of %r without a recorded delivery mark: if this "
                "member dies, the next one may not count them as redelivered",
                self._topic,
            )
        finally:
            self._marks.poll(0)  # serve its log and error callbacks
        for track in tracks:
            if track.key in marks:
                track.marked = marks[track.key]
                track.requested = max(track.requested, track.marked)

    # -- rebalances (called inside poll(), on the polling thread) ---------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._marks is not None
        keys = [(tp.topic, tp.partition) for tp in partitions]
        inherited: dict[PartitionKey, int] = {}
        try:
            wanted = [TopicPartition(topic, partition) for topic, partition in keys]
            found = self._marks.committed(wanted, timeout=self._driver.options.timeout)
            inherited = {(tp.topic, tp.partition): tp.offset for tp in found}
        except KafkaException as err:
            log.warning("anyqueue: reading delivery marks of %r failed: %s", self._topic, err)
        finally:
            self._marks.poll(0)
        with self._changed:
            for key in keys:
                self._tracks[key] = _Track(key, max(inherited.get(key, NO_OFFSET), 0))
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
                self._revoking = True
                try:
                    while not self._closed and any(
                        self._tracks[k].unsettled_handed() for k in keys
                    ):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._changed.wait(remaining)
                finally:
                    self._revoking = False
        self._commit(wait=True, keys=keys)
        with self._lock:
            tracks = [self._tracks[k] for k in keys]
            self._forget(keys)
        marks = {}
        for track in tracks:
            mark = max(track.inherited, track.handed, track.position() or 0)
            if mark != track.marked:
                marks[track.key] = mark
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
        self._ready.drop(keys)
        if any(entry[2][0].key in keys for entry in self._delayed):
            self._delayed = [e for e in self._delayed if e[2][0].key not in keys]
            heapq.heapify(self._delayed)
