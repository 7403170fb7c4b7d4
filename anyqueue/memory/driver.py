"""`memory://` — an in-process broker, the embedded default and the reference semantics.

URL: `memory://` (the process-wide default namespace) or `memory://NAME` (a separate one).
Brokers connected to the same name in one process share topics, groups and messages.
`memory://[NAME]?profile=sqs|kafka|rabbitmq|redis` imitates that broker instead: its declared
capabilities and the behaviours users trip over (see `profiles.py`); `visibility_timeout` sets
the `sqs` profile's default lease. A profile's namespace is separate from the plain one.

| feature             | memory://                                       |
|---------------------|-------------------------------------------------|
| ordering            | global per group (one consumer)                  |
| durable             | no: state lives as long as the process           |
| ack timeout         | yes (leases reaped lazily by receivers)          |
| nack(delay)         | yes                                              |
| wildcards `*` `#`   | yes                                              |
| max body            | 16 MiB                                           |
| profiles            | `?profile=sqs`, `kafka`, `rabbitmq`, `redis`     |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..capabilities import Capabilities
from ..config import BrokerURL
from ..driver import Driver, SubscriptionDriver
from ..errors import ConfigError
from ..message import Message
from .namespace import Consumer, Namespace, namespace
from .plugin import CAPABILITIES


@dataclass(frozen=True)
class MemoryOptions:
    """`memory://` options: which broker to imitate, if any."""

    #: imitate this broker's semantics (None: the reference semantics)
    profile: Literal["sqs", "kafka", "rabbitmq", "redis"] | None = None
    #: `profile=sqs` only: seconds a delivery stays leased when `subscribe` got no ack_timeout
    #: (the real backend's option of that name; 30 by default)
    visibility_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.visibility_timeout is not None:
            if self.profile != "sqs":
                raise ConfigError("visibility_timeout is an option of profile=sqs only")
            if not 0 < self.visibility_timeout <= 43_200:
                raise ConfigError("visibility_timeout must be > 0 and <= 43200 seconds")


class MemorySubscription(SubscriptionDriver):
    def __init__(
        self,
        space: Namespace,
        consumer: Consumer,
        siblings: set[MemorySubscription],
        lease_seconds: float | None = None,
    ) -> None:
        self._space = space
        self._consumer = consumer
        self._siblings = siblings  # the driver's open subscriptions, for drop_connections()
        if lease_seconds is not None:
            self.lease_seconds = lease_seconds  # leases run out by default (profile=sqs)

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        return self._space.lease(self._consumer, max_messages, timeout)

    def ack(self, messages: Sequence[Message]) -> None:
        self._space.ack(self._consumer, [m.receipt for m in messages])

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        self._space.nack(self._consumer, [m.receipt for m in messages], delay)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        self._space.extend(self._consumer, [m.receipt for m in messages], seconds)

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
        self._space = namespace(url.netloc, options.profile)
        self._subscriptions: set[MemorySubscription] = set()
        self._capabilities = CAPABILITIES
        self._default_lease: float | None = None
        if options.profile is not None:
            from .profiles import PROFILES  # only when asked for: no cost on the default path

            profile = PROFILES[options.profile]
            self._capabilities = profile.capabilities
            self._default_lease = options.visibility_timeout or profile.default_lease_seconds

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def declare(self, topic: str, group: str) -> None:
        self._space.queue(topic, group)

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self._space.publish(topic, messages)

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> MemorySubscription:
        queue = self._space.queue(topic, group)
        if ack_timeout is None and self._default_lease is not None:
            consumer = self._space.consumer(queue, self._default_lease)
            lease_seconds: float | None = consumer.ack_timeout
        else:
            consumer = self._space.consumer(queue, ack_timeout)
            lease_seconds = None
        subscription = MemorySubscription(self._space, consumer, self._subscriptions, lease_seconds)
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
