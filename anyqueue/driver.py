"""The driver interface: all a backend implements. Everything portable lives in the core.

A backend provides a `Driver` (one connection to one broker) and a `SubscriptionDriver` (one
consumer on one group). The core calls them with names already validated, bodies already encoded
and ids already assigned; it does the batching of acks, prefetch accounting, dead letters,
retries, request/reply correlation, and maps exceptions through `Driver.classify_error`.

Contracts every driver keeps (the conformance suite checks them):
- Methods may be called concurrently from several threads, on one driver and on one
  subscription (e.g. `ack` from a handler thread while another thread waits in `receive`).
- `receive` blocks no longer than its `timeout`; `close` may be called from any thread while a
  `receive` is blocked, which then returns promptly.
- Drivers do not retry a failed call beyond their own reconnect policy, and never report a
  publish as accepted when the broker did not confirm it.
- Acks for deliveries of a connection that has since dropped are discarded, never sent again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .capabilities import Capabilities
from .config import BrokerURL
from .errors import ConnectionError, Error, NotSupported
from .message import Message


class SubscriptionDriver(ABC):
    """One consumer attached to a group (durable or ephemeral)."""

    #: how many acks the core collects before calling `ack` (1: each ack at once). Backends with
    #: batched settle calls (SQS DeleteMessageBatch, Kafka commits) raise it.
    ack_batch_size: ClassVar[int] = 1

    #: the lease a received message gets when the user set no ack_timeout, for backends whose
    #: messages always come back after a while (SQS visibility timeout). Consume workers then
    #: call `extend` while a handler is still running. None: leases never expire on their own.
    lease_seconds: float | None = None

    @abstractmethod
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        """Lease up to `max_messages` (>= 1) messages, waiting at most `timeout` seconds.

        Returns [] on timeout or after `close()`. Each message has `topic`, `delivery_count`,
        `redelivered` and a `receipt` for settling set. A leased message stays invisible to the
        rest of the group until acked, nacked, its lease expires (ack timeout) or this
        subscription closes or loses its connection.
        """

    @abstractmethod
    def ack(self, messages: Sequence[Message]) -> None:
        """Remove these leased messages from the group. Unknown or stale receipts are ignored."""

    @abstractmethod
    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        """Return these messages to the group, deliverable again after `delay` seconds (None: at
        once). The next delivery has `delivery_count` one higher and `redelivered` set."""

    @abstractmethod
    def close(self) -> None:
        """Stop receiving; unsettled messages go back to the group. Idempotent, any thread."""

    def extend(self, messages: Sequence[Message], seconds: float) -> None:  # noqa: B027
        """Push the lease deadline of these messages `seconds` ahead (backends with ack timeouts
        whose consumers may run long handlers). Default: nothing to do."""


@dataclass
class Inbox:
    """Where replies to this connection's requests arrive: an address and a subscription."""

    address: str
    subscription: SubscriptionDriver
    #: optional push delivery: the core calls `listen(on_reply)` once instead of running a
    #: thread that polls `subscription`; the driver then calls `on_reply(message)` for every
    #: reply, from any thread (it must be quick: it only wakes the waiting caller). Saves a
    #: thread hop per request on backends whose replies arrive on an I/O thread anyway.
    listen: Callable[[Callable[[Message], None]], None] | None = None


class Driver(ABC):
    """One connection to a broker, created by `anyqueue.connect()` from a URL and options."""

    #: the options dataclass; its fields are the backend's valid URL query / keyword options
    Options: ClassVar[type[Any]]

    def __init__(self, url: BrokerURL, options: Any) -> None:
        self.url = url
        self.options = options

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this connection (with its options and server) promises."""

    @abstractmethod
    def declare(self, topic: str, group: str) -> None:
        """Create the durable `group` on `topic` (a name or, with wildcards, a pattern) if it
        does not exist. From the moment this returns, messages published to the topic are kept
        for the group. Idempotent."""

    @abstractmethod
    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Send `messages` (ids, bodies and content types set) to every group of `topic`; return
        once the broker has accepted all of them (confirms / replies / delivery reports). On
        failure raise: the core reports the whole batch as not sent."""

    @abstractmethod
    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> SubscriptionDriver:
        """Attach a consumer to `group` of `topic` (declaring it), or to a new ephemeral group
        that sees only messages published after this returns when `group` is None. `prefetch`
        is the most unsettled messages the consumer holds; `ack_timeout` (only when the backend
        claims it) is the lease after which an unsettled message returns to the group."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection. Idempotent."""

    # -- optional: native request/reply ------------------------------------------------------
    def open_inbox(self) -> Inbox | None:
        """A private reply address and its subscription, or None to let the core use an
        ephemeral subscription on a unique reply topic (works on any backend)."""
        return None

    def send_reply(self, address: str, message: Message) -> None:
        """Deliver a reply to an address from `open_inbox` (default: publish to that topic)."""
        self.publish(address, [message])

    # -- optional: introspection ----------------------------------------------------------------
    def depth(self, topic: str, group: str) -> int | None:
        """About how many messages durable `group` of `topic` holds (ready, delayed and leased;
        0 if the group does not exist), or None when the backend cannot tell cheaply. Used for
        progress, ETAs and `anyqueue migrate --dry-run`, never for correctness: it may be stale
        under concurrent traffic. Must not lease, move or count as a delivery of any message.
        Default: None."""
        return None

    # -- optional: error mapping ----------------------------------------------------------------
    def classify_error(self, error: BaseException) -> type[Error]:
        """The anyqueue error class for a native exception (the core chains the original).
        Default: OSError → ConnectionError, anything else → Error."""
        if isinstance(error, OSError):
            return ConnectionError
        return Error


def unsupported(feature: str, backend: str, hint: str = "") -> NotSupported:
    """A NotSupported naming the feature and the backend, for drivers to raise."""
    return NotSupported(f"{backend} does not support {feature}" + (f": {hint}" if hint else ""))
