"""The state of one in-process broker: groups as queues, bindings, leases, delays.

One lock guards a namespace; each queue has a condition on it so receivers sleep until a
message, a due delay or an expiring lease needs them. Leases and delays are reaped lazily by
receivers, so there is no timer thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

from ..message import Message
from ..names import is_pattern, matches


class Entry:
    """One message in one queue, with that queue's delivery count."""

    __slots__ = ("delivery_count", "message", "seq")

    def __init__(self, message: Message, seq: int) -> None:
        self.message = message
        self.seq = seq
        self.delivery_count = 0


class Lease:
    """A message handed to a consumer and not yet settled."""

    __slots__ = ("consumer", "deadline", "entry")

    def __init__(self, entry: Entry, consumer: Consumer, deadline: float | None) -> None:
        self.entry = entry
        self.consumer = consumer
        self.deadline = deadline


class Consumer:
    """A subscription's view of a queue: its open leases and whether it is closed."""

    def __init__(self, queue: Queue, ack_timeout: float | None) -> None:
        self.queue = queue
        self.ack_timeout = ack_timeout
        self.leases: set[int] = set()
        self.closed = False


class Queue:
    """A group: ready messages, leased ones, delayed ones."""

    def __init__(self, namespace: Namespace, binding: str, group: str, ephemeral: bool) -> None:
        self.namespace = namespace
        self.binding = binding
        self.group = group
        self.ephemeral = ephemeral
        self.ready: deque[Entry] = deque()
        self.leased: dict[int, Lease] = {}
        self.delayed: list[tuple[float, int, Entry]] = []
        self.lease_deadlines: list[tuple[float, int]] = []
        self.wakeup = threading.Condition(namespace.lock)

    # all methods below run with namespace.lock held
    def make_ready(self, entry: Entry) -> None:
        """A delayed entry is due: it joins the back."""
        self.ready.append(entry)

    def requeue(self, entries: Sequence[Entry]) -> None:
        """Put entries back at the head, oldest first, so a single consumer keeps its order."""
        for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
            self.ready.appendleft(entry)
        self.wakeup.notify(len(entries))

    def reap(self, now: float) -> float | None:
        """Move due delays and expired leases back to ready; return when the next one is due."""
        expired: list[Entry] = []
        while self.lease_deadlines and self.lease_deadlines[0][0] <= now:
            deadline, lease_id = heapq.heappop(self.lease_deadlines)
            lease = self.leased.get(lease_id)
            if lease is not None and lease.deadline == deadline:  # else settled or extended
                del self.leased[lease_id]
                lease.consumer.leases.discard(lease_id)
                expired.append(lease.entry)
        if expired:
            self.requeue(expired)
        while self.delayed and self.delayed[0][0] <= now:
            self.make_ready(heapq.heappop(self.delayed)[2])
        due = [q[0][0] for q in (self.delayed, self.lease_deadlines) if q]
        return min(due) if due else None


class Namespace:
    """All queues and bindings of one `memory://NAME`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.queues: dict[tuple[str, str], Queue] = {}
        self._routes: dict[str, tuple[Queue, ...]] = {}
        self._seq = itertools.count()
        self._lease_ids = itertools.count(1)
        self._ephemeral_ids = itertools.count(1)

    def queue(self, binding: str, group: str | None) -> Queue:
        """The durable queue of `group` on `binding`, created if new; or a new ephemeral one."""
        with self.lock:
            if group is None:
                key = (binding, f"\0ephemeral-{next(self._ephemeral_ids)}")
            else:
                key = (binding, group)
            queue = self.queues.get(key)
            if queue is None:
                queue = self._new_queue(binding, key[1], ephemeral=group is None)
                self.queues[key] = queue
                self._routes.clear()
            return queue

    def _new_queue(self, binding: str, group: str, ephemeral: bool) -> Queue:
        return Queue(self, binding, group, ephemeral)

    def consumer(self, queue: Queue, ack_timeout: float | None) -> Consumer:
        """A new subscription's consumer on `queue`."""
        return Consumer(queue, ack_timeout)

    def depth(self, binding: str, group: str) -> int:
        """Messages the durable `group` on `binding` holds: ready, delayed and leased."""
        with self.lock:
            queue = self.queues.get((binding, group))
            if queue is None:
                return 0
            return len(queue.ready) + len(queue.delayed) + len(queue.leased)

    def drop(self, queue: Queue) -> None:
        with self.lock:
            self.queues.pop((queue.binding, queue.group), None)
            self._routes.clear()

    def _route(self, topic: str) -> tuple[Queue, ...]:
        routes = self._routes.get(topic)
        if routes is None:
            routes = tuple(
                q
                for (binding, _), q in self.queues.items()
                if (matches(binding, topic) if is_pattern(binding) else binding == topic)
            )
            self._routes[topic] = routes
        return routes

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        with self.lock:
            queues = self._route(topic)
            if not queues:
                return  # nobody subscribed: the message reaches nobody (the contract)
            for message in messages:
                message.topic = topic
            for queue in queues:
                queue.ready.extend(Entry(m, next(self._seq)) for m in messages)
                queue.wakeup.notify(len(messages))

    def lease(self, consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
        queue = consumer.queue
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if consumer.closed:
                    return []
                now = time.monotonic()
                next_due = queue.reap(now) if (queue.delayed or queue.lease_deadlines) else None
                if queue.ready:
                    return self._hand_out(consumer, max_messages, now)
                remaining = deadline - now
                if remaining <= 0:
                    return []
                if next_due is not None:
                    remaining = min(remaining, max(0.0, next_due - now))
                queue.wakeup.wait(remaining)

    def _hand_out(self, consumer: Consumer, max_messages: int, now: float) -> list[Message]:
        queue = consumer.queue
        ready = queue.ready
        lease_deadline = now + consumer.ack_timeout if consumer.ack_timeout else None
        batch = []
        for _ in range(min(max_messages, len(ready))):
            entry = ready.popleft()
            entry.delivery_count += 1
            lease_id = next(self._lease_ids)
            queue.leased[lease_id] = Lease(entry, consumer, lease_deadline)
            consumer.leases.add(lease_id)
            if lease_deadline is not None:
                heapq.heappush(queue.lease_deadlines, (lease_deadline, lease_id))
            batch.append(entry.message._delivered_copy(entry.delivery_count, lease_id))
        if ready:
            queue.wakeup.notify()  # more left: let another waiting consumer take some
        return batch

    def _release(self, consumer: Consumer, receipts: Sequence[int]) -> list[Entry]:
        leased = consumer.queue.leased
        released = []
        for lease_id in receipts:
            lease = leased.get(lease_id)
            if lease is not None and lease.consumer is consumer:
                del leased[lease_id]
                consumer.leases.discard(lease_id)
                released.append(lease.entry)
        return released

    def ack(self, consumer: Consumer, receipts: Sequence[int]) -> None:
        with self.lock:
            self._release(consumer, receipts)

    def nack(self, consumer: Consumer, receipts: Sequence[int], delay: float | None) -> None:
        with self.lock:
            entries = self._release(consumer, receipts)
            queue = consumer.queue
            if not delay:
                queue.requeue(entries)
                return
            due = time.monotonic() + delay
            for entry in entries:
                heapq.heappush(queue.delayed, (due, entry.seq, entry))
            queue.wakeup.notify_all()  # sleepers recompute their wake-up time

    def extend(self, consumer: Consumer, receipts: Sequence[int], seconds: float) -> None:
        """Push the deadline of these leases of `consumer` `seconds` from now (leases without
        a deadline never expire and stay so)."""
        with self.lock:
            queue = consumer.queue
            deadline = time.monotonic() + seconds
            for lease_id in receipts:
                lease = queue.leased.get(lease_id)
                if lease is not None and lease.consumer is consumer and lease.deadline is not None:
                    lease.deadline = deadline
                    heapq.heappush(queue.lease_deadlines, (deadline, lease_id))

    def disconnect(self, consumer: Consumer, *, closing: bool) -> None:
        """Return every lease of `consumer` to its queue (close, or a dropped connection)."""
        with self.lock:
            if closing:
                consumer.closed = True
            entries = self._release(consumer, list(consumer.leases))
            consumer.queue.requeue(entries)
            consumer.queue.wakeup.notify_all()


_namespaces: dict[tuple[str, str | None], Namespace] = {}
_namespaces_lock = threading.Lock()


def namespace(name: str, profile: str | None = None) -> Namespace:
    """The process-wide namespace called `name` ("" for plain `memory://`). With a `profile`
    (`memory://NAME?profile=sqs`) it is another namespace, whose groups behave like that
    broker's: a broker imitating SQS never shares queues with one that does not."""
    with _namespaces_lock:
        found = _namespaces.get((name, profile))
        if found is None:
            if profile is None:
                found = Namespace(name)
            else:
                from .profiles import PROFILES, ProfiledNamespace  # only when asked for

                found = ProfiledNamespace(name, PROFILES[profile])
            _namespaces[(name, profile)] = found
        return found
