"""`memory://` — an in-process broker, the embedded default and the reference semantics.

URL: `memory://` (the process-wide default namespace) or `memory://NAME` (a separate one).
Brokers connected to the same name in one process share topics, groups and messages.

| feature             | memory://                                       |
|---------------------|-------------------------------------------------|
| ordering            | global per group (one consumer)                  |
| durable             | no: state lives as long as the process           |
| ack timeout         | yes (leases reaped lazily by receivers)          |
| nack(delay)         | yes                                              |
| wildcards `*` `#`   | yes                                              |
| max body            | 16 MiB                                           |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..capabilities import Capabilities
from ..config import BrokerURL
from ..driver import Driver, SubscriptionDriver
from ..errors import ConfigError
from ..message import Message
from .namespace import Consumer, Namespace, namespace
from .plugin import CAPABILITIES


@dataclass(frozen=True)
class MemoryOptions:
    """`memory://` takes no options yet."""


class MemorySubscription(SubscriptionDriver):
    def __init__(
        self, space: Namespace, consumer: Consumer, siblings: set[MemorySubscription]
    ) -> None:
        self._space = space
        self._consumer = consumer
        self._siblings = siblings  # the driver's open subscriptions, for drop_connections()

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        return self._space.lease(self._consumer, max_messages, timeout)

    def ack(self, messages: Sequence[Message]) -> None:
        self._space.ack(self._consumer, [m.receipt for m in messages])

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        self._space.nack(self._consumer, [m.receipt for m in messages], delay)

    def close(self) -> None:
        if self._consumer.closed:
            return
        self._siblings.discard(self)
        self._space.disconnect(self._consumer, closing=True)
        if self._consumer.queue.ephemeral:
            self._space.drop(self._consumer.queue)

    def drop_connection(self) -> None:
        """As if the network failed: leases go back, later acks for them are ignored."""
        self._space.disconnect(self._consumer, closing=False)


class MemoryDriver(Driver):
    Options = MemoryOptions

    def __init__(self, url: BrokerURL, options: MemoryOptions) -> None:
        super().__init__(url, options)
        if url.username or url.password or url.port or url.path not in ("", "/"):
            raise ConfigError(f"memory URLs are memory:// or memory://NAME, not {url.redacted()!r}")
        self._space = namespace(url.netloc)
        self._subscriptions: set[MemorySubscription] = set()

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def declare(self, topic: str, group: str) -> None:
        self._space.queue(topic, group)

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self._space.publish(topic, messages)

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> MemorySubscription:
        queue = self._space.queue(topic, group)
        consumer = Consumer(queue, ack_timeout)
        subscription = MemorySubscription(self._space, consumer, self._subscriptions)
        self._subscriptions.add(subscription)
        return subscription

    def depth(self, topic: str, group: str) -> int:
        return self._space.depth(topic, group)

    def drop_connections(self) -> None:
        """Test hook: simulate a dropped connection for every subscription of this driver."""
        for subscription in list(self._subscriptions):
            subscription.drop_connection()

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()
