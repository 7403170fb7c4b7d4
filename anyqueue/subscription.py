"""A subscription: prefetch accounting, ack batching and settling on top of a SubscriptionDriver."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import Closed, ConfigError, Error, NotSupported
from .message import Message

if TYPE_CHECKING:
    from types import TracebackType

    from .broker import Broker
    from .driver import SubscriptionDriver

log = logging.getLogger("anyqueue")

#: longest a batched ack waits for its batch to fill before it is sent anyway (seconds)
ACK_FLUSH_DELAY = 0.2

#: longest single wait inside a driver's receive, so close() and stop() are noticed promptly
MAX_DRIVER_WAIT = 1.0

DEAD_REASON = "anyqueue-dead-reason"
DEAD_ERROR = "anyqueue-dead-error"
DEAD_DELIVERY_COUNT = "anyqueue-dead-delivery-count"
DEAD_TOPIC = "anyqueue-dead-topic"
DEAD_GROUP = "anyqueue-dead-group"


class Subscription:
    """Messages of one group (or an ephemeral one), at most `prefetch` unsettled at a time.

    `receive()` and iteration are safe from several threads; `close()` from any thread wakes a
    blocked `receive()`, which then returns None.
    """

    def __init__(
        self,
        broker: Broker,
        driver: SubscriptionDriver,
        topic: str,
        group: str | None,
        prefetch: int,
        ack_timeout: float | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self.prefetch = prefetch
        self.ack_timeout = ack_timeout
        self._broker = broker
        self._driver = driver
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._buffer: deque[Message] = deque()  # leased from the driver, not yet handed out
        self._held = 0  # handed out, not yet settled
        self._fetching = False
        self._closed = False
        self._draining = False  # a stopping worker: hand out nothing more, still settle
        self._waiting = 0  # threads waiting on _changed: settling notifies only if any (hot path)
        self._ack_batch = max(1, driver.ack_batch_size)
        self._pending_acks: list[Message] = []
        self._ack_timer: threading.Timer | None = None

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when `timeout` seconds pass (or the subscription closes
        meanwhile). Waits while `prefetch` messages are held unsettled."""
        if self._closed:
            raise Closed(f"subscription to {self.topic!r} is closed")
        with self._lock:  # fast path: a message is already leased and waiting
            if self._buffer and not (self._closed or self._draining):
                self._held += 1
                message = self._buffer.popleft()
                message._subscription = self
                return message
        batch = self._take(1, timeout)
        return batch[0] if batch else None

    def receive_batch(
        self, max_messages: int | None = None, timeout: float | None = None
    ) -> list[Message]:
        """Up to `max_messages` messages (default and ceiling: what `prefetch` leaves room for)
        as soon as at least one is there; [] when `timeout` seconds pass or the subscription
        closes meanwhile. Settle them one by one or all at once with `ack(messages)`: a batch
        costs one lock round and one broker call instead of one per message."""
        if max_messages is not None and max_messages < 1:
            raise ConfigError(f"max_messages must be at least 1, not {max_messages}")
        if self._closed:
            raise Closed(f"subscription to {self.topic!r} is closed")
        return self._take(max_messages or self.prefetch, timeout)

    def _take(self, wanted: int, timeout: float | None) -> list[Message]:
        """Hand out up to `wanted` messages (within the prefetch room), fetching from the driver
        when the buffer is empty; [] on timeout, close or drain."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fetched = False
        while True:
            with self._lock:
                while True:
                    if self._closed or self._draining:
                        return []
                    if self._buffer:
                        return self._hand_out(wanted)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    expired = remaining is not None and remaining <= 0
                    if expired and fetched:
                        return []
                    if self._held < self.prefetch and not self._fetching:
                        break
                    if expired:
                        return []
                    self._waiting += 1
                    try:
                        self._changed.wait(remaining)
                    finally:
                        self._waiting -= 1
                room = self.prefetch - self._held
                self._fetching = True
            wait = (
                MAX_DRIVER_WAIT if remaining is None else min(max(remaining, 0.0), MAX_DRIVER_WAIT)
            )
            batch: list[Message] = []
            try:
                if self._pending_acks:
                    # acks settled while this receive waited reach the broker before it is
                    # asked for more (an SQS FIFO group stays blocked until they do)
                    self._flush_acks()
                batch = self._broker._call(self._driver.receive, room, wait)
            finally:
                with self._lock:
                    self._fetching = False
                    self._buffer.extend(batch)
                    self._changed.notify_all()
            fetched = True

    def _hand_out(self, wanted: int) -> list[Message]:
        """Take up to `wanted` buffered messages, never more than prefetch allows (lock held;
        the buffer is not empty). The buffer never holds more than the prefetch room it was
        fetched for, so at least one message fits."""
        buffer = self._buffer
        count = min(wanted, len(buffer), max(1, self.prefetch - self._held))
        if count == len(buffer):  # the usual receive_batch: all of it, without a call each
            taken = list(buffer)
            buffer.clear()
        else:
            taken = [buffer.popleft() for _ in range(count)]
        for message in taken:
            message._subscription = self
        self._held += count
        return taken

    def __iter__(self) -> Iterator[Message]:
        """Messages until the subscription is closed (a closed one yields nothing)."""
        while True:
            try:
                message = self.receive()
            except Closed:
                return
            if message is None:
                if self._closed or self._draining:
                    return
                continue
            yield message

    # -- settling ----------------------------------------------------------------------------
    def _settle(
        self, message: Message, *, ack: bool, requeue: bool = True, delay: float | None = None
    ) -> None:
        if not ack:
            self._check_nack(requeue, delay)
        with self._lock:
            if message._settled or self._closed:
                return
            message._settled = True
            self._held -= 1
            if self._waiting:
                self._changed.notify_all()
            if ack and self._ack_batch > 1:
                self._pending_acks.append(message)
                if len(self._pending_acks) < self._ack_batch:
                    self._start_ack_timer()
                    return
        if ack:
            if self._ack_batch > 1:
                self._flush_acks()
            else:
                self._broker._call(self._driver.ack, (message,))
        elif requeue:
            self._broker._call(self._driver.nack, (message,), delay)
        else:
            self._dead_letter(message, reason="rejected", error=None)

    def ack(self, messages: Iterable[Message]) -> None:
        """Ack many messages of this subscription at once (e.g. a `receive_batch`): one lock
        round and one broker call. Messages already settled, or from another subscription,
        are skipped, as `Message.ack()` would skip them."""
        batch = []
        with self._lock:
            if self._closed:
                return
            for message in messages:
                if message._subscription is self and not message._settled:
                    message._settled = True
                    batch.append(message)
            if not batch:
                return
            self._held -= len(batch)
            if self._waiting:
                self._changed.notify_all()
            if self._ack_batch > 1:
                self._pending_acks.extend(batch)
                if len(self._pending_acks) < self._ack_batch:
                    self._start_ack_timer()
                    return
        if self._ack_batch > 1:
            self._flush_acks()
        else:
            self._broker._call(self._driver.ack, batch)

    def _start_ack_timer(self) -> None:
        """A batch that does not fill is sent anyway, soon: an idle subscriber's acks must not
        wait for a visibility timeout to redeliver them (lock held)."""
        if self._ack_timer is None:
            self._ack_timer = threading.Timer(ACK_FLUSH_DELAY, self._flush_acks_later)
            self._ack_timer.daemon = True
            self._ack_timer.start()

    def _check_nack(self, requeue: bool, delay: float | None) -> None:
        caps = self._broker.capabilities
        if requeue and not caps.nack:
            raise NotSupported(
                f"{self._broker.backend} does not support nack(requeue=True); "
                "use nack(requeue=False) to dead-letter, or leave it unacked"
            )
        if delay is not None:
            if not requeue:
                raise ConfigError("nack(delay=...) needs requeue=True")
            if not caps.delay:
                raise NotSupported(f"{self._broker.backend} does not support nack(delay=...)")
            if delay < 0:
                raise ConfigError(f"nack delay must be >= 0 seconds, not {delay}")
            if caps.max_delay_seconds is not None and delay > caps.max_delay_seconds:
                raise ConfigError(
                    f"nack delay {delay}s exceeds {self._broker.backend}'s limit of "
                    f"{caps.max_delay_seconds}s"
                )

    def _dead_letter(self, message: Message, *, reason: str, error: BaseException | None) -> None:
        """Publish `message` to `<topic>.dead` with headers saying why, then ack it. If the
        publish fails the message is not acked, so it comes back: nothing is lost."""
        headers = dict(message.headers)
        headers[DEAD_REASON] = reason
        headers[DEAD_DELIVERY_COUNT] = str(message.delivery_count)
        headers[DEAD_TOPIC] = message.topic
        if self.group is not None:
            headers[DEAD_GROUP] = self.group
        if error is not None:
            headers[DEAD_ERROR] = f"{type(error).__name__}: {error}"[:1000]
        dead = Message(
            message.body,
            key=message.key,
            headers=headers,
            id=message.id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
        )
        self._broker._publish_messages(message.topic + ".dead", [dead])
        self._broker._call(self._driver.ack, (message,))

    def _settle_dead(self, message: Message, error: BaseException) -> None:
        """A worker's last failure: dead-letter with the error named."""
        with self._lock:
            if message._settled or self._closed:
                return
            message._settled = True
            self._held -= 1
            self._changed.notify_all()
        self._dead_letter(message, reason="max-deliveries", error=error)

    def _flush_acks(self) -> None:
        with self._lock:
            batch, self._pending_acks = self._pending_acks, []
            timer, self._ack_timer = self._ack_timer, None
        if timer is not None:
            timer.cancel()
        if batch:
            self._broker._call(self._driver.ack, batch)

    def _flush_acks_later(self) -> None:
        try:
            self._flush_acks()
        except Error as err:
            # unsent acks mean redelivery, never loss; the next flush tries the rest
            log.warning("anyqueue: sending batched acks failed: %s", err)

    def _extend_all(self, messages: list[Message], seconds: float) -> None:
        self._broker._call(self._driver.extend, messages, seconds)

    # -- lifecycle ---------------------------------------------------------------------------
    def _wait_settled(self, timeout: float | None) -> bool:
        """Wait until every handed-out message is settled (a stopping worker's handlers)."""
        with self._lock:
            self._waiting += 1
            try:
                return self._changed.wait_for(lambda: self._held <= 0 or self._closed, timeout)
            finally:
                self._waiting -= 1

    def _drain(self) -> None:
        """Hand out nothing more (a stopping worker); settling still works until close()."""
        with self._lock:
            self._draining = True
            self._changed.notify_all()

    def close(self) -> None:
        """Stop; every unsettled message goes back to its group. Idempotent, any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.clear()
            self._changed.notify_all()
        try:
            self._flush_acks()  # acked messages must not come back because a batch waited
        finally:
            self._broker._call(self._driver.close)
            self._broker._forget(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Subscription {self.topic!r} group={self.group!r} {state}>"
