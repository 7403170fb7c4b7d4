"""`kafka://` — Apache Kafka (and Kafka-protocol brokers) through confluent-kafka (librdkafka).

URL: `kafka://host:port[,host:port...]` (the bootstrap servers), e.g. `kafka://localhost:9092`.
`kafka://user:password@host:9093` logs in with SASL (PLAIN unless `sasl_mechanism`) over TLS
(unless `security_protocol=sasl_plaintext`). Options, as query parameters or keywords (times in
seconds): see `KafkaOptions`; any librdkafka setting passes through `librdkafka`.

| feature             | kafka://                                                            |
|---------------------|---------------------------------------------------------------------|
| topic / group       | a Kafka topic (created on first use) / consumer group `<topic>:<group>` |
| ordering            | per key (the key picks the partition; Java-compatible murmur2)      |
| durable             | yes (idempotent producer, acks=all); restart not verifiable on Tansu |
| publish confirms    | the delivery report; a batch is produced, then waited for once      |
| acks                | any order; the contiguous acked prefix is committed, batched        |
| nack / delay        | yes: a copy goes to the group's retry topic (attempt, not-before)    |
| delivery_count      | yes: attempt header + delivery marks (close, rebalance, crash)      |
| ack timeout         | no (NotSupported)                                                   |
| wildcards `*` `#`   | no (NotSupported)                                                   |
| replays history     | no: `declare` starts a group at the topic's current end             |
| request/reply       | one reply topic per connection, read without a group join           |
| max body            | `max_body_bytes` (1,000,000 by default; raise with the broker's limit) |
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from anyqueue.capabilities import Capabilities
from anyqueue.config import BrokerURL, secret
from anyqueue.driver import Driver, Inbox
from anyqueue.errors import (
    ConfigError,
    Error,
    InvalidName,
    MessageTooLarge,
)
from anyqueue.errors import (
    ConnectionError as BrokerConnectionError,
)
from anyqueue.message import Message

from . import naming, wire
from .admin import GROUP_ACTIVE, NO_OFFSET, Cluster, error_code
from .plugin import CAPABILITIES
from .subscription import GroupTarget, KafkaSubscription

log = logging.getLogger("anyqueue.kafka")

SecurityProtocol = Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]

#: librdkafka settings that carry credentials: they go through the secret options instead
_SECRET_SETTINGS = ("password", "secret", "token", "credential")
#: extra room the producer allows above max_body_bytes, for key and headers
_HEADROOM = 64 * 1024
#: librdkafka's fetch.queue.backoff.ms for subscriptions (see _consumer_config)
FETCH_QUEUE_BACKOFF_MS = 20

_CONNECTION_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)


@dataclass(frozen=True)
class KafkaOptions:
    """Options of `kafka://` URLs (query parameters) and `connect()` keywords; times in seconds.

    partitions / replication_factor: for topics this backend creates (-1: the broker default).
    session_timeout: a member that stops heartbeating this long leaves its group (Kafka's
        session.timeout.ms); group joins take a while on the order of it on some brokers.
    max_poll_interval: the longest a member may hold messages without the client fetching
        (max.poll.interval.ms); subscriptions fetch in the background, so this rarely matters.
    fetch_wait: how long the broker may hold a fetch open waiting for data (fetch.wait.max.ms):
        small values make request/reply and single messages fast.
    linger: how long the producer waits to batch messages (linger.ms); 0 by default, since
        every publish waits for its confirmation (a batch is produced at once anyway).
    publish_timeout: how long a publish may wait for its delivery report (message.timeout.ms).
    timeout: admin requests and the first connection.
    max_body_bytes: the largest body accepted (keep below the broker's message.max.bytes).
    commit_interval: how often a subscription commits the offsets acked so far.
    rebalance_grace: when a partition is taken away, how long messages handed out from it may
        still be acked before it is committed and handed over (fewer duplicate deliveries).
    librdkafka: further librdkafka settings, a dict (keyword) or `name=value,name=value` (URL);
        credentials go into the secret options below, never in here.
    """

    partitions: int = 3
    replication_factor: int = -1
    session_timeout: float = 45.0
    max_poll_interval: float = 300.0
    fetch_wait: float = 0.01
    linger: float = 0.0
    publish_timeout: float = 30.0
    timeout: float = 10.0
    max_body_bytes: int = 1_000_000
    commit_interval: float = 0.2
    rebalance_grace: float = 2.0
    client_id: str = "anyqueue"
    security_protocol: SecurityProtocol | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = secret()
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = secret()
    librdkafka: Mapping[str, Any] | str | None = field(default=None)

    def __post_init__(self) -> None:
        positive = ("session_timeout", "max_poll_interval", "publish_timeout", "timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"option {name!r} must be > 0, not {getattr(self, name)!r}")
        for name in ("fetch_wait", "linger", "commit_interval", "rebalance_grace"):
            if getattr(self, name) < 0:
                raise ValueError(f"option {name!r} must be >= 0, not {getattr(self, name)!r}")
        if self.partitions < 1:
            raise ValueError(f"option 'partitions' must be >= 1, not {self.partitions!r}")
        if self.max_body_bytes < 1:
            raise ValueError(f"option 'max_body_bytes' must be >= 1, not {self.max_body_bytes!r}")
        if self.librdkafka is not None and not isinstance(self.librdkafka, (str, Mapping)):
            raise ValueError("option 'librdkafka' must be a dict or 'name=value,...' text")


def librdkafka_settings(given: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Parse the librdkafka pass-through option; credentials are refused (use the secret
    options, which are redacted everywhere)."""
    if given is None:
        return {}
    if isinstance(given, str):
        settings: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in given.split(","))):
            name, equals, value = item.partition("=")
            if not equals or not name.strip():
                raise ConfigError(f"librdkafka settings are name=value pairs, not {item!r}")
            settings[name.strip()] = value.strip()
    else:
        settings = dict(given)
    for name in settings:
        if not isinstance(name, str):
            raise ConfigError("librdkafka setting names must be str")
        if any(word in name.lower() for word in _SECRET_SETTINGS):
            raise ConfigError(
                f"librdkafka setting {name!r} holds a credential: pass it as sasl_password or "
                "ssl_key_password (or in the URL), which are never shown"
            )
    return settings


class KafkaDriver(Driver):
    """One connection: a shared idempotent producer, an admin client, consumers per subscription."""

    Options = KafkaOptions

    def __init__(self, url: BrokerURL, options: KafkaOptions) -> None:
        super().__init__(url, options)
        self.options: KafkaOptions = options
        self._passthrough = librdkafka_settings(options.librdkafka)
        self._common = {**self._client_config(url, options), **self._passthrough}
        self.cluster = Cluster(self._common, timeout=options.timeout)
        try:
            self.cluster.check_reachable()
        except KafkaException as err:
            raise BrokerConnectionError(
                f"cannot reach Kafka at {url.redacted()} within {options.timeout}s: "
                f"{err.args[0].str() if err.args else err}"
            ) from err
        self._producer = Producer(
            {
                **self._common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": options.linger * 1000,
                "message.timeout.ms": int(options.publish_timeout * 1000),
                "message.max.bytes": max(1_048_576, options.max_body_bytes + _HEADROOM),
                # keys pick partitions as Java clients do; keyless messages spread over all
                # partitions one by one (not sticky), so competing members share a burst
                "partitioner": "murmur2_random",
                "sticky.partitioning.linger.ms": 0,
                # topics are created explicitly (partition count from the options); a late
                # reply must not bring a deleted reply topic back
                "allow.auto.create.topics": False,
                **self._passthrough,
            }
        )
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._subscriptions: set[KafkaSubscription] = set()
        self._declared: set[tuple[str, str]] = set()
        self._deliveries = threading.Thread(
            target=self._serve_deliveries, name="anyqueue-kafka-deliveries", daemon=True
        )
        self._deliveries.start()
        self._capabilities = dataclasses.replace(
            CAPABILITIES, max_body_bytes=options.max_body_bytes
        )

    @staticmethod
    def _client_config(url: BrokerURL, options: KafkaOptions) -> dict[str, Any]:
        if url.path not in ("", "/"):
            raise ConfigError(f"kafka URLs have no path: kafka://host:port[,host:port], not {url}")
        if not url.netloc:
            raise ConfigError("a kafka URL names its bootstrap servers: kafka://host:port")
        config: dict[str, Any] = {
            "bootstrap.servers": url.netloc,
            "client.id": options.client_id,
            "logger": log,
            "error_cb": _log_client_error,
        }
        username = url.username if url.username is not None else options.sasl_username
        password = url.password if url.password is not None else options.sasl_password
        protocol = options.security_protocol
        if username is not None or password is not None:
            if username is None or password is None:
                raise ConfigError("SASL needs both a user name and a password")
            config["sasl.username"] = username
            config["sasl.password"] = password
            config["sasl.mechanism"] = (options.sasl_mechanism or "PLAIN").upper()
            protocol = protocol or "sasl_ssl"
        elif options.sasl_mechanism is not None:
            config["sasl.mechanism"] = options.sasl_mechanism.upper()
        if protocol is not None:
            config["security.protocol"] = protocol
        tls = {
            "ssl.ca.location": options.ssl_ca_location,
            "ssl.certificate.location": options.ssl_certificate_location,
            "ssl.key.location": options.ssl_key_location,
            "ssl.key.password": options.ssl_key_password,
        }
        config.update({name: value for name, value in tls.items() if value is not None})
        return config

    def _consumer_config(self, group_id: str) -> dict[str, Any]:
        options = self.options
        session_ms = int(options.session_timeout * 1000)
        return {
            **self._common,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # where a group has no committed offset (a partition added later, offsets expired
            # after a long idle time): read from the start, duplicates rather than losses
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(3000, session_ms // 10)),
            "max.poll.interval.ms": max(session_ms, int(options.max_poll_interval * 1000)),
            "fetch.wait.max.ms": int(options.fetch_wait * 1000),
            # once its local queue is full, librdkafka stops fetching a partition for this long
            # (default 1 s) even if the queue drains at once: a consumer a little slower than
            # the broker then idles most of the time (measured on Tansu: 155k instead of
            # 560k+ messages/s reading a backlog)
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            "enable.partition.eof": False,
            "on_commit": _log_commit_error,
            **self._passthrough,
        }

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- declaring --------------------------------------------------------------------------------
    def _ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        self.cluster.ensure_topic(
            topic, partitions or self.options.partitions, self.options.replication_factor
        )

    def declare(self, topic: str, group: str) -> None:
        if (topic, group) in self._declared:
            return
        self._ensure_topic(topic)
        self._ensure_topic(naming.retry_topic(topic, group))
        self._start_at_end(naming.group_id(topic, group), topic)
        with self._lock:
            self._declared.add((topic, group))

    def _start_at_end(self, group_id: str, topic: str) -> None:
        """Give the group a committed offset at the current end of each partition where it has
        none, so it keeps everything published from now on, before any member joins."""
        partitions = self.cluster.partitions(topic)
        # ends first: a message published meanwhile lies beyond them, so it is never skipped
        ends = self.cluster.end_offsets(topic, partitions)
        committed = self.cluster.offsets(group_id, [(topic, p) for p in partitions])
        missing = {
            (topic, p): ends[p] for p in partitions if committed.get((topic, p), NO_OFFSET) < 0
        }
        if not missing:
            return
        try:
            self.cluster.set_offsets(group_id, missing)
        except KafkaException as err:
            if error_code(err) not in GROUP_ACTIVE:
                raise
            log.debug("anyqueue: group %r is active; its members own its offsets", group_id)

    # -- publishing -------------------------------------------------------------------------------
    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self._ensure_topic(topic)
        record_headers = wire.record_headers
        self._produce(topic, messages, [record_headers(m) for m in messages])

    def _produce(
        self, topic: str, messages: Sequence[Message], headers: Sequence[wire.Headers]
    ) -> None:
        """Produce one record per message, with the given headers, and wait for all their
        delivery reports; raise on the first error.

        Headers and keys are all encoded before any record is produced: one that cannot be
        encoded fails the whole call with nothing sent. The loop makes no object per record
        that the garbage collector tracks (see `wire.Headers`)."""
        encode_key = wire.encode_key
        keys = [encode_key(m.key) for m in messages]
        waiter = _Deliveries()
        produce, delivered = self._producer.produce, waiter.delivered
        deadline = time.monotonic() + self.options.publish_timeout
        produced = 0
        try:
            for message, key, record_headers in zip(messages, keys, headers):
                while True:
                    try:
                        produce(
                            topic, message.body, key, headers=record_headers, on_delivery=delivered
                        )
                        break
                    except BufferError:  # the client's queue is full: let deliveries drain
                        if waiter.wait_a_little() or time.monotonic() > deadline:
                            raise
                produced += 1
        finally:
            waiter.seal(produced)
        waiter.wait(self.options.publish_timeout + self.options.timeout)

    def _serve_deliveries(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.2)

    # -- subscribing ------------------------------------------------------------------------------
    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> KafkaSubscription:
        if group is not None:
            self.declare(topic, group)
            target = GroupTarget(
                group_id=naming.group_id(topic, group),
                marks_group_id=naming.marks_group_id(topic, group),
                retry_topic=naming.retry_topic(topic, group),
            )
            config = self._consumer_config(target.group_id)
            return self._track(KafkaSubscription(self, config, topic=topic, group=target))
        # ephemeral: a private, explicit assignment from the current end (no group join)
        self._ensure_topic(topic)
        partitions = self.cluster.partitions(topic)
        ends = self.cluster.end_offsets(topic, partitions)
        assignment = [TopicPartition(topic, p, ends[p]) for p in partitions]
        config = self._consumer_config(f"anyqueue.ephemeral.{uuid.uuid4().hex}")
        return self._track(KafkaSubscription(self, config, topic=topic, assignment=assignment))

    def _track(self, subscription: KafkaSubscription) -> KafkaSubscription:
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def _untrack(self, subscription: KafkaSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    # -- request / reply --------------------------------------------------------------------------
    def open_inbox(self) -> Inbox:
        """A reply topic of one partition for this connection, read from offset 0 by an
        assigned consumer: no group join, per connection or per request. Deleted on close."""
        address = naming.REPLY_PREFIX + uuid.uuid4().hex
        self._ensure_topic(address, partitions=1)
        self.cluster.partitions(address)
        config = self._consumer_config(f"anyqueue.inbox.{uuid.uuid4().hex}")

        def delete_topic(subscription: KafkaSubscription) -> None:
            self._untrack(subscription)
            try:
                self.cluster.delete_topic(address)
            except Exception as err:  # e.g. topic deletion disabled: retention cleans up
                log.info("anyqueue: could not delete reply topic %s: %s", address, err)

        subscription = KafkaSubscription(
            self,
            config,
            topic=address,
            assignment=[TopicPartition(address, 0, 0)],
            on_close=delete_topic,
        )
        return Inbox(address, self._track(subscription))

    def send_reply(self, address: str, message: Message) -> None:
        """Produce the reply to the caller's reply topic; if the topic is gone (the caller
        closed), drop the reply rather than create the topic again."""
        if not self.cluster.topic_exists(address):
            log.debug("anyqueue: reply topic %s is gone; reply dropped", address)
            return
        self._produce(address, [message], [wire.record_headers(message)])

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closing.is_set():
            return
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            try:
                subscription.close()
            except Exception as err:
                log.warning("anyqueue: closing %r: %s", subscription, err)
        # the deliveries thread stops first: from here on flush() serves the delivery reports,
        # so each publish's counter keeps its single writer (see _Deliveries)
        self._closing.set()
        self._deliveries.join()
        try:
            remaining = self._producer.flush(self.options.publish_timeout)
            if remaining:
                log.warning("anyqueue: %d messages were still unconfirmed at close", remaining)
        finally:
            self.cluster.close()

    def classify_error(self, error: BaseException) -> type[Error]:
        code = error_code(error)
        if code in _TOO_LARGE:
            return MessageTooLarge
        if code in _CONNECTION_ERRORS:
            return BrokerConnectionError
        if code == KafkaError.TOPIC_EXCEPTION:
            return InvalidName
        return super().classify_error(error)


class _Deliveries:
    """Counts the delivery reports of one publish call.

    Lock-free on the hot path: only the deliveries thread (the one that polls the producer)
    calls `delivered`, and only the publishing thread calls `seal` (with the number of records
    it produced), so each counter has one writer; whichever side sees the other's last step
    sets `_done`."""

    __slots__ = ("_delivered", "_done", "_produced", "_sealed", "error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._produced = 0
        self._delivered = 0
        self._sealed = False
        self.error: KafkaError | None = None

    def delivered(self, error: KafkaError | None, _record: Any) -> None:
        if error is not None and self.error is None:
            self.error = error
        self._delivered += 1
        if self._sealed and self._delivered == self._produced:
            self._done.set()

    def seal(self, produced: int) -> None:
        self._produced = produced
        self._sealed = True
        if self._delivered == self._produced:
            self._done.set()

    def wait_a_little(self) -> bool:
        """Wait briefly for deliveries to free the client's queue; True if one failed."""
        self._done.wait(0.01)
        return self.error is not None

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise BrokerConnectionError(f"no delivery report from Kafka within {timeout:.0f}s")
        if self.error is not None:
            raise KafkaException(self.error)


def _log_client_error(error: KafkaError) -> None:
    if error.fatal():
        log.error("anyqueue: Kafka client error: %s", error)
    else:
        log.debug("anyqueue: Kafka client: %s", error)


def _log_commit_error(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    if error is not None and error.code() != KafkaError._NO_OFFSET:
        log.info("anyqueue: offset commit failed (the messages will come back): %s", error)
