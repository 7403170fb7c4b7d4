"""`amqp://` and `amqps://` — RabbitMQ through pika, with one I/O thread per connection.

URL: `amqp://USER:PASSWORD@HOST:PORT/VHOST?option=value` (defaults: `guest:guest`, `localhost`,
5672, vhost `/`; write a vhost containing `/` URL-encoded, e.g. `%2F`). `amqps://` uses TLS on
port 5671 and verifies the server certificate and host name unless `verify=false`.

| feature             | amqp://                                                          |
|---------------------|------------------------------------------------------------------|
| ordering            | global per group (one consumer); a requeued message goes last     |
| durable             | yes: durable queues, persistent messages, publisher confirms      |
| ack timeout         | yes: leases timed on the I/O thread, then basic.nack(requeue)     |
| nack(delay)         | yes: TTL'd wait queues dead-lettering back (no plugin needed)     |
| wildcards `*` `#`   | yes, native topic exchanges (dead letters on their own exchange)  |
| delivery_count      | exact: a header counted on requeue; quorum's x-delivery-count     |
| request/reply       | direct reply-to (`amq.rabbitmq.reply-to`)                         |
| max body            | 16 MiB                                                           |

Options (URL query or `connect()` keywords):

| option                | default    | meaning                                                  |
|-----------------------|------------|----------------------------------------------------------|
| `queue_type`          | `classic`  | `quorum`: groups are replicated quorum queues            |
| `exchange`            | `anyqueue` | name of the topic exchange (and prefix of queues)        |
| `heartbeat`           | `60`       | AMQP heartbeat seconds (0: off)                          |
| `connect_timeout`     | `10`       | seconds for one connection attempt                       |
| `connection_attempts` | `1`        | attempts before `connect()` gives up                     |
| `reconnect_timeout`   | `60`       | seconds calls wait for a dropped connection to return    |
| `operation_timeout`   | `30`       | seconds to wait for confirms and declarations            |
| `ca_file`             |            | TLS: CA bundle to verify the server with                 |
| `cert_file`, `key_file` |          | TLS: client certificate and key                          |
| `verify`              | `true`     | TLS: verify the server certificate and host name         |

Every publish waits for the publisher confirm (`publish_batch` pipelines them). Threads never
touch pika directly: calls are marshalled onto the connection's I/O thread (see `connection`),
which keeps heartbeats flowing while handlers run and reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pika
import pika.channel
import pika.exceptions
import pika.spec

from anyqueue.capabilities import Capabilities
from anyqueue.config import BrokerURL
from anyqueue.driver import Driver, Inbox, SubscriptionDriver
from anyqueue.errors import ConfigError, ConnectionError, Error
from anyqueue.message import OCTET_STREAM, Message, new_id

from .connection import Channel, Future, Link, translate
from .plugin import CAPABILITIES
from .topology import (
    DELIVERIES_HEADER,
    DIRECT_REPLY_TO,
    KEY_HEADER,
    QUORUM_COUNT_HEADER,
    RESERVED_HEADERS,
    TOPIC_HEADER,
    count_header,
    dead_exchange,
    delay_bucket_ms,
    exchange_for,
    group_queue,
    user_headers,
    wait_queue,
)

log = logging.getLogger("anyqueue.rabbitmq")

PERSISTENT = 2
TRANSIENT = 1


@dataclass(frozen=True)
class RabbitOptions:
    """Options of `amqp://` / `amqps://` (see the module docstring)."""

    queue_type: Literal["classic", "quorum"] = "classic"
    exchange: str = "anyqueue"
    heartbeat: int = 60
    connect_timeout: float = 10.0
    connection_attempts: int = 1
    reconnect_timeout: float = 60.0
    operation_timeout: float = 30.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat < 0:
            raise ValueError(f"heartbeat must be >= 0 seconds, not {self.heartbeat}")
        for name in ("connect_timeout", "reconnect_timeout", "operation_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, not {getattr(self, name)}")
        if self.connection_attempts < 1:
            raise ValueError(f"connection_attempts must be >= 1, not {self.connection_attempts}")
        if not self.exchange or self.exchange.startswith("amq.") or not self.exchange.isascii():
            raise ValueError(
                f"exchange must be a non-empty ASCII name not starting with 'amq.', "
                f"not {self.exchange!r}"
            )
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")


def connection_parameters(
    url: BrokerURL, options: RabbitOptions, name: str
) -> pika.ConnectionParameters:
    """pika's parameters for a URL; amqps:// verifies the certificate and host name."""
    tls = url.scheme == "amqps"
    host = url.host or "localhost"
    vhost = url.path[1:] if url.path.startswith("/") and len(url.path) > 1 else "/"
    ssl_options = None
    if tls:
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.cert_file:
            context.load_cert_chain(options.cert_file, options.key_file)
        if not options.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        ssl_options = pika.SSLOptions(context, server_hostname=host)
    elif options.ca_file or options.cert_file or not options.verify:
        raise ConfigError("ca_file, cert_file, key_file and verify apply to amqps:// only")
    credentials = pika.PlainCredentials(
        url.username or "guest", url.password or "guest", erase_on_connect=False
    )
    return pika.ConnectionParameters(
        host=host,
        port=url.port or (5671 if tls else 5672),
        virtual_host=vhost,
        credentials=credentials,
        heartbeat=options.heartbeat,
        ssl_options=ssl_options,
        connection_attempts=1,
        socket_timeout=options.connect_timeout,
        stack_timeout=options.connect_timeout + 5,
        client_properties={"connection_name": name, "product": "anyqueue"},
    )


def _properties(message: Message, delivery_mode: int) -> pika.BasicProperties:
    headers = message.headers
    if message.key is not None:
        headers = dict(headers)
        headers[KEY_HEADER] = message.key
    return pika.BasicProperties(
        content_type=message.content_type,
        delivery_mode=delivery_mode,
        message_id=message.id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=headers or None,
    )


def _copy_properties(
    original: pika.BasicProperties, deliveries: int, topic: str
) -> pika.BasicProperties:
    """Properties of a requeued copy: the original's, counting the deliveries so far."""
    headers = {k: v for k, v in (original.headers or {}).items() if k not in RESERVED_HEADERS}
    key = (original.headers or {}).get(KEY_HEADER)
    if key is not None:
        headers[KEY_HEADER] = key
    headers[DELIVERIES_HEADER] = deliveries
    headers[TOPIC_HEADER] = topic
    return pika.BasicProperties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        headers=headers,
        delivery_mode=original.delivery_mode or PERSISTENT,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        type=original.type,
        app_id=original.app_id,
    )


# -- publishing ------------------------------------------------------------------------------------
class _NotSent(ConnectionError):
    """The publish channel was gone before anything was sent: safe to send again."""


class _Batch:
    """Messages of one publish call waiting for their confirms."""

    __slots__ = ("future", "refused", "remaining", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.remaining = size
        self.refused = 0
        self.future = Future()

    def confirmed(self, accepted: bool) -> None:
        self.remaining -= 1
        if not accepted:
            self.refused += 1
        if self.remaining == 0:
            if self.refused:
                self.future.reject(
                    Error(f"RabbitMQ refused {self.refused} of {self.size} message(s) (nack)")
                )
            else:
                self.future.resolve()


class _PublishChannel:
    """A confirm-mode channel and the publishes it has not had confirmed yet (I/O thread)."""

    def __init__(self, channel: Channel, confirming: bool) -> None:
        self.channel = channel
        self.confirming = confirming
        self.unconfirmed: OrderedDict[int, _Batch] = OrderedDict()
        self.last_tag = 0

    def confirm(self, frame: Any) -> None:
        method = frame.method
        accepted = isinstance(method, pika.spec.Basic.Ack)
        unconfirmed = self.unconfirmed
        if method.multiple:
            while unconfirmed:
                tag = next(iter(unconfirmed))
                if tag > method.delivery_tag:
                    break
                unconfirmed.popitem(last=False)[1].confirmed(accepted)
        else:
            batch = unconfirmed.pop(method.delivery_tag, None)
            if batch is not None:
                batch.confirmed(accepted)

    def lost(self, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            error: Error = translate(reason, "a publish")
        else:
            error = ConnectionError(
                "the connection dropped before RabbitMQ confirmed the publish; "
                "it may or may not have been delivered"
            )
        batches = set(self.unconfirmed.values())
        self.unconfirmed.clear()
        for batch in batches:
            batch.future.reject(error)


class _Publisher:
    """A publishing channel of the driver. The main one is in confirm mode and also carries the
    direct reply-to consumer (RabbitMQ requires requests to leave on the channel that consumes
    their replies); replies leave on another one without confirms, so that a process that both
    asks and answers does not make the broker route its replies back into the same channel."""

    def __init__(self, driver: RabbitDriver, *, confirming: bool) -> None:
        self._driver = driver
        self._confirming = confirming
        self._link = driver._link
        self._lock = threading.Lock()
        self._current: _PublishChannel | None = None

    def ensure(self) -> _PublishChannel:
        """The publish channel of the current connection, opened (and set up) if needed."""
        with self._lock:
            current = self._current
            if (
                current is not None
                and current.channel.close_reason is None
                and current.channel.generation == self._link.generation
            ):
                return current
            self._current = None
            timeout = self._driver.options.operation_timeout
            channel = self._link.open_channel(timeout)
            publish_channel = _PublishChannel(channel, self._confirming)
            channel.on_close(publish_channel.lost)
            try:
                if self._confirming:
                    channel.call(
                        lambda ch, done: ch.confirm_delivery(
                            publish_channel.confirm, callback=done
                        ),
                        timeout,
                        "enabling publisher confirms",
                    )
                self._driver._ensure_exchanges(channel)
                inbox = self._driver._inbox
                if self._confirming and inbox is not None and not inbox.closed:
                    inbox.consume_on(channel, timeout)
            except BaseException:
                channel.close(timeout)
                raise
            self._current = publish_channel
            return publish_channel

    def attach_inbox(self, inbox: RabbitInbox) -> None:
        """Start consuming replies on the publish channel (a new one does so by itself)."""
        current = self.ensure()
        with self._lock:
            if inbox.channel is not current.channel:
                inbox.consume_on(current.channel, self._driver.options.operation_timeout)

    def send(self, items: list[tuple[str, str, bytes, pika.BasicProperties]], what: str) -> None:
        """Publish (exchange, routing key, body, properties) items; return once all are
        confirmed. ConnectionError if the connection drops first (never reported as sent)."""
        timeout = self._driver.options.operation_timeout
        for attempt in range(2):
            target = self.ensure()
            batch = _Batch(len(items))

            def send(target: _PublishChannel = target, batch: _Batch = batch) -> None:
                self._send_now(target, batch, items)

            self._link.post(send)
            try:
                batch.future.result(timeout, what)
                return
            except _NotSent:
                if attempt:
                    raise

    def send_without_confirm(
        self, items: list[tuple[str, str, bytes, pika.BasicProperties]]
    ) -> None:
        """Publish without waiting for the confirm (for direct replies, which RabbitMQ hands
        straight to a waiting consumer and never stores: a confirm would prove nothing more)."""
        target = self.ensure()
        batch = _Batch(len(items))  # confirmed on the I/O thread; nobody waits for it
        self._link.post(lambda: self._send_now(target, batch, items))

    @staticmethod
    def _send_now(
        target: _PublishChannel,
        batch: _Batch,
        items: list[tuple[str, str, bytes, pika.BasicProperties]],
    ) -> None:
        channel = target.channel
        if not channel.usable:
            batch.future.reject(_NotSent("the publish channel closed before sending"))
            return
        assert channel.pika is not None
        publish = channel.pika.basic_publish
        unconfirmed = target.unconfirmed
        try:
            for exchange, routing_key, body, properties in items:
                publish(exchange, routing_key, body, properties)
                if target.confirming:
                    target.last_tag += 1
                    unconfirmed[target.last_tag] = batch
        except Exception as err:  # the connection is failing under us
            batch.future.reject(err)
            return
        if not target.confirming:
            batch.future.resolve()

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.channel.close(self._driver.options.operation_timeout)


# -- consuming -------------------------------------------------------------------------------------
class _Delivery:
    """What settling one delivery needs: its channel and tag, and the original to requeue."""

    __slots__ = ("body", "channel", "lease", "properties", "queue", "recount", "tag", "topic")

    def __init__(
        self,
        channel: Channel,
        tag: int,
        properties: pika.BasicProperties,
        body: bytes,
        queue: str,
        topic: str,
        recount: bool,
    ) -> None:
        self.channel = channel
        self.tag = tag
        self.properties = properties
        self.body = body
        self.queue = queue
        self.topic = topic
        self.recount = recount
        self.lease: Any = None  # the ack timeout's timer on the I/O thread, if any


def _message(
    channel: Channel,
    queue: str,
    method: Any,
    properties: pika.BasicProperties,
    body: bytes,
    *,
    native_count: bool,
) -> Message:
    """A received message; `delivery_count` from our header (plus quorum's count)."""
    raw = properties.headers
    deliveries = count_header(raw, DELIVERIES_HEADER)
    if native_count:
        deliveries += count_header(raw, QUORUM_COUNT_HEADER)
    topic = method.routing_key
    key = None
    if raw:
        topic = raw.get(TOPIC_HEADER) or topic
        key = raw.get(KEY_HEADER)
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        elif key is not None and not isinstance(key, str):
            key = str(key)
    # a classic queue says only "redelivered": record the lost delivery before handing it out
    recount = method.redelivered and not native_count
    return Message(
        body,
        key=key,
        headers=user_headers(raw),
        id=properties.message_id or new_id(),
        content_type=properties.content_type or OCTET_STREAM,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        topic=topic,
        delivery_count=deliveries + 1,
        redelivered=deliveries > 0 or method.redelivered,
        receipt=_Delivery(channel, method.delivery_tag, properties, body, queue, topic, recount),
    )


class RabbitSubscription(SubscriptionDriver):
    """A consumer on its own channel (basic.qos = prefetch), re-attached after reconnects."""

    def __init__(
        self,
        driver: RabbitDriver,
        topic: str,
        group: str | None,
        prefetch: int,
        ack_timeout: float | None = None,
    ) -> None:
        self._driver = driver
        self._ack_timeout = ack_timeout
        self._link = driver._link
        self.topic = topic
        self.group = group
        self.prefetch = prefetch
        options = driver.options
        self._queue = group_queue(options.exchange, topic, group) if group else ""
        self._native_count = group is not None and options.queue_type == "quorum"
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._buffer: deque[Message] = deque()
        self._acks: list[_Delivery] = []  # acked, not yet taken by the I/O thread
        self._channel: Channel | None = None
        self._attach_lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def attached(self) -> bool:
        return self._channel is not None

    # -- attaching -----------------------------------------------------------------------------
    def attach(self) -> None:
        """Open a channel, declare the queue and binding, and start consuming (idempotent)."""
        timeout = self._driver.options.operation_timeout
        with self._attach_lock:
            if self._closed or self._channel is not None:
                return
            channel = self._link.open_channel(timeout)
            try:
                queue = self._declare(channel, timeout)
                with self._lock:
                    self._channel = channel
                channel.on_close(lambda reason: self._detach(channel))

                def consume(ch: pika.channel.Channel, done: Any) -> None:
                    ch.add_on_cancel_callback(lambda frame: self._cancelled(channel))
                    ch.basic_consume(
                        queue,
                        on_message_callback=lambda ch, method, properties, body: self._arrive(
                            channel, queue, method, properties, body
                        ),
                        callback=done,
                    )

                channel.call(consume, timeout, f"consuming from {queue!r}")
            except BaseException:
                with self._lock:
                    if self._channel is channel:
                        self._channel = None
                channel.close(timeout)
                raise
        if self._closed:  # closed while attaching
            channel.close(timeout)

    def _declare(self, channel: Channel, timeout: float) -> str:
        driver = self._driver
        driver._ensure_exchanges(channel)
        prefetch = self.prefetch
        channel.call(
            lambda ch, done: ch.basic_qos(prefetch_count=prefetch, callback=done),
            timeout,
            "setting the prefetch",
        )
        if self.group is None:
            frame = channel.call(
                lambda ch, done: ch.queue_declare(
                    "", exclusive=True, auto_delete=True, callback=done
                ),
                timeout,
                "declaring an ephemeral queue",
            )
            queue: str = frame.method.queue
        else:
            queue = self._queue
            driver._declare_queue(channel, queue)
        exchange = exchange_for(driver.options.exchange, self.topic)
        topic = self.topic
        channel.call(
            lambda ch, done: ch.queue_bind(queue, exchange, routing_key=topic, callback=done),
            timeout,
            f"binding {queue!r} to {topic!r}",
        )
        return queue

    def _arrive(
        self,
        channel: Channel,
        queue: str,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        # on the I/O thread
        message = _message(
            channel, queue, method, properties, body, native_count=self._native_count
        )
        with self._lock:
            if self._channel is not channel:
                return  # a dead channel's delivery: the broker has taken it back
            channel.unsettled[method.delivery_tag] = None
            self._buffer.append(message)
            self._arrived.notify()

    def _detach(self, channel: Channel) -> None:
        # on the I/O thread: the channel closed, its deliveries went back to the queue
        with self._lock:
            if self._channel is channel:
                self._channel = None
                self._buffer.clear()
                self._arrived.notify_all()

    def _cancelled(self, channel: Channel) -> None:
        # on the I/O thread: the broker cancelled the consumer (e.g. its queue was deleted)
        self._detach(channel)
        channel.post(lambda ch: ch.close())

    # -- SubscriptionDriver ----------------------------------------------------------------------
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            if self._channel is None and not self._closed and not self._reattach(deadline):
                return []
            with self._lock:
                while not self._buffer and not self._closed and self._channel is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._arrived.wait(remaining)
                if self._closed:
                    return []
                take = min(max_messages, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(take)]
            if any(m.receipt.recount for m in batch):
                batch = self._recount(batch)
            if batch and self._ack_timeout is not None:
                self._lease([m.receipt for m in batch], self._ack_timeout)
            if batch or time.monotonic() >= deadline:
                return batch

    def _reattach(self, deadline: float) -> bool:
        """Attach again after a dropped channel or connection; False when not back in time."""
        if not self._link.wait_open(max(0.0, deadline - time.monotonic())):
            return False
        try:
            self.attach()
        except ConnectionError as err:  # dropped again meanwhile: the next call retries
            log.debug("anyqueue: re-attaching to %r failed: %s", self.topic, err)
            return False
        return self._channel is not None

    def _lease(self, deliveries: list[_Delivery], seconds: float) -> None:
        """Start (or restart) the ack timeout of handed-out deliveries: the I/O thread gives
        each back to the queue (basic.nack, requeue) if it is still unsettled `seconds` later,
        whether or not the receiving thread is busy. A later ack of it is ignored."""

        def start() -> None:
            for delivery in deliveries:
                channel = delivery.channel
                if delivery.tag not in channel.unsettled or not channel.usable:
                    continue
                if delivery.lease is not None:
                    self._link.cancel_timer(delivery.lease)
                delivery.lease = self._link.call_later(seconds, lambda d=delivery: self._expire(d))

        self._link.post(start)

    def _expire(self, delivery: _Delivery) -> None:
        # on the I/O thread: the lease ran out; it comes back redelivered and counted
        delivery.lease = None
        channel = delivery.channel
        if delivery.tag in channel.unsettled and channel.usable:
            del channel.unsettled[delivery.tag]
            assert channel.pika is not None
            channel.pika.basic_nack(delivery.tag, requeue=True)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        if self._ack_timeout is not None:
            self._lease([m.receipt for m in messages], seconds)

    def _recount(self, batch: list[Message]) -> list[Message]:
        """Requeue redelivered messages of a classic queue with their count raised, so a
        delivery lost to a close or a dropped connection counts (then ack the original)."""
        recount = [m for m in batch if m.receipt.recount]
        self._requeue(recount, delay=None)
        return [m for m in batch if not m.receipt.recount]

    def ack(self, messages: Sequence[Message]) -> None:
        # acks gather until the I/O thread takes them: under load one frame acks many
        with self._lock:
            flush_posted = bool(self._acks)
            self._acks.extend(m.receipt for m in messages)
        if not flush_posted:
            self._link.post(self._flush_acks)

    def _flush_acks(self) -> None:
        with self._lock:
            deliveries, self._acks = self._acks, []
        self._ack_now(deliveries)

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        if self._native_count and not delay:
            deliveries = [m.receipt for m in messages]
            self._link.post(lambda: self._requeue_now(deliveries))
            return
        self._requeue(messages, delay)

    def _requeue(self, messages: Sequence[Message], delay: float | None) -> None:
        """Republish copies carrying the delivery count (through a wait queue when delayed),
        then ack the originals. Deliveries of a dead channel are already back: skipped."""
        live = [m for m in messages if self._still_held(m.receipt)]  # not expired, not dropped
        if not live:
            return
        driver = self._driver
        if delay:
            ttl = delay_bucket_ms(delay)
            exchange = driver._ensure_wait_queue(ttl)
        else:
            exchange = ""  # the default exchange routes by queue name
        items = []
        for message in live:
            delivery: _Delivery = message.receipt
            properties = _copy_properties(
                delivery.properties, message.delivery_count, delivery.topic
            )
            items.append((exchange, delivery.queue, delivery.body, properties))
        driver._publisher.send(items, "requeueing messages")
        self.ack(live)

    def _still_held(self, delivery: _Delivery) -> bool:
        channel = delivery.channel
        return (
            delivery.tag in channel.unsettled
            and channel.close_reason is None
            and channel.generation == self._link.generation
        )

    def _ack_now(self, deliveries: list[_Delivery]) -> None:
        """On the I/O thread: ack these deliveries. Tags already settled, or of a channel that
        died (the broker has taken them back), are dropped, never sent on another channel.
        A run of the oldest unsettled tags goes as one `multiple` ack."""
        by_channel: dict[Channel, set[int]] = {}
        for delivery in deliveries:
            if delivery.lease is not None:
                self._link.cancel_timer(delivery.lease)
                delivery.lease = None
            by_channel.setdefault(delivery.channel, set()).add(delivery.tag)
        for channel, tags in by_channel.items():
            unsettled = channel.unsettled
            acked = {tag for tag in tags if tag in unsettled}
            if not acked or not channel.usable:
                continue
            assert channel.pika is not None
            highest = 0
            while unsettled:
                oldest = next(iter(unsettled))
                if oldest not in acked:
                    break
                unsettled.popitem(last=False)
                acked.discard(oldest)
                highest = oldest
            if highest:
                channel.pika.basic_ack(highest, multiple=True)
            for tag in acked:
                del unsettled[tag]
                channel.pika.basic_ack(tag)

    def _requeue_now(self, deliveries: list[_Delivery]) -> None:
        """On the I/O thread: give deliveries back to their queue (quorum queues count it)."""
        for delivery in deliveries:
            if delivery.lease is not None:
                self._link.cancel_timer(delivery.lease)
                delivery.lease = None
            channel = delivery.channel
            if delivery.tag not in channel.unsettled or not channel.usable:
                continue
            del channel.unsettled[delivery.tag]
            assert channel.pika is not None
            channel.pika.basic_nack(delivery.tag, requeue=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channel, self._channel = self._channel, None
            self._buffer.clear()
            self._arrived.notify_all()
        self._driver._forget(self)
        if channel is not None:
            # after the acks posted before it; the broker requeues what is still unacked
            channel.close(self._driver.options.operation_timeout)


class RabbitInbox(SubscriptionDriver):
    """Replies to this connection's requests, from direct reply-to (auto-acked by RabbitMQ)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._buffer: deque[Message] = deque()
        #: the channel consuming replies (the publish channel it was last attached to)
        self.channel: Channel | None = None
        self.closed = False
        self._push: Callable[[Message], None] | None = None

    def listen(self, on_reply: Callable[[Message], None]) -> None:
        """Hand every reply to `on_reply` on the I/O thread as it arrives (no polling thread)."""
        self._push = on_reply

    def consume_on(self, channel: Channel, timeout: float) -> None:
        """Consume replies on `channel`, the one requests are published on."""

        def consume(ch: pika.channel.Channel, done: Any) -> None:
            ch.basic_consume(
                DIRECT_REPLY_TO,
                on_message_callback=self._arrive,
                auto_ack=True,
                callback=done,
            )

        channel.call(consume, timeout, "consuming direct replies")
        self.channel = channel

    def _arrive(
        self, ch: pika.channel.Channel, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        message = Message(
            body,
            key=None,
            headers=user_headers(properties.headers),
            id=properties.message_id or new_id(),
            content_type=properties.content_type or OCTET_STREAM,
            correlation_id=properties.correlation_id,
            topic=DIRECT_REPLY_TO,
            delivery_count=1,
        )
        push = self._push
        if push is not None:
            if not self.closed:
                push(message)
            return
        with self._lock:
            if not self.closed:
                self._buffer.append(message)
                self._arrived.notify()

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._buffer and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._arrived.wait(remaining)
            take = min(max_messages, len(self._buffer))
            return [self._buffer.popleft() for _ in range(take)]

    def ack(self, messages: Sequence[Message]) -> None:
        """Replies are acked by RabbitMQ on delivery (direct reply-to)."""

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        """A reply cannot go back: direct reply-to keeps nothing."""

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._buffer.clear()
            self._arrived.notify_all()
        # the consumer ends with the publish channel; replies meanwhile are dropped above


# -- the driver ------------------------------------------------------------------------------------
class RabbitDriver(Driver):
    """One AMQP connection (and its I/O thread) to a RabbitMQ node."""

    Options = RabbitOptions
    options: RabbitOptions

    def __init__(self, url: BrokerURL, options: RabbitOptions) -> None:
        super().__init__(url, options)
        #: shown by `rabbitmqctl list_connections user_provided_name` (tests use it)
        self.connection_name = f"anyqueue-{uuid.uuid4().hex[:12]}"
        parameters = connection_parameters(url, options, self.connection_name)
        self._link = Link(
            parameters, name=self.connection_name, reconnect_timeout=options.reconnect_timeout
        )
        self._publisher = _Publisher(self, confirming=True)
        self._replier = _Publisher(self, confirming=False)
        self._admin_lock = threading.Lock()
        self._admin: Channel | None = None
        self._exchanges_generation = 0
        self._wait_queues: set[tuple[int, int]] = set()  # (generation, ttl ms) declared
        self._subscriptions: set[RabbitSubscription] = set()
        self._subscriptions_lock = threading.Lock()
        self._inbox: RabbitInbox | None = None
        self._closed = False
        if options.queue_type == "quorum":
            self._queue_arguments: dict[str, Any] | None = {"x-queue-type": "quorum"}
        else:
            self._queue_arguments = None
        self._link.on_open(self._reconnected)
        where = f"{url.scheme}://{url.netloc}{url.path}"
        self._link.start(
            options.connection_attempts,
            options.connection_attempts * (options.connect_timeout + 5),
            where,
        )

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # -- topology ------------------------------------------------------------------------------
    def _ensure_exchanges(self, channel: Channel) -> None:
        """Declare the two topic exchanges once per connection."""
        if self._exchanges_generation == channel.generation:
            return
        timeout = self.options.operation_timeout
        for name in (self.options.exchange, dead_exchange(self.options.exchange)):

            def declare(ch: pika.channel.Channel, done: Any, name: str = name) -> None:
                ch.exchange_declare(name, exchange_type="topic", durable=True, callback=done)

            channel.call(declare, timeout, f"declaring exchange {name!r}")
        self._exchanges_generation = channel.generation

    def _declare_queue(self, channel: Channel, queue: str) -> None:
        arguments = self._queue_arguments
        channel.call(
            lambda ch, done: ch.queue_declare(
                queue, durable=True, arguments=arguments, callback=done
            ),
            self.options.operation_timeout,
            f"declaring queue {queue!r}",
        )

    def _admin_channel(self) -> Channel:
        # with _admin_lock held
        admin = self._admin
        if (
            admin is None
            or admin.close_reason is not None
            or admin.generation != self._link.generation
        ):
            admin = self._admin = self._link.open_channel(self.options.operation_timeout)
        return admin

    def _ensure_wait_queue(self, ttl_ms: int) -> str:
        """The exchange of the wait queue for `ttl_ms`, declared if new: messages expire there
        and RabbitMQ dead-letters them through the default exchange back to their queue."""
        name = wait_queue(self.options.exchange, ttl_ms)
        if (self._link.generation, ttl_ms) in self._wait_queues:
            return name
        timeout = self.options.operation_timeout
        with self._admin_lock:
            admin = self._admin_channel()
            try:
                admin.call(
                    lambda ch, done: ch.exchange_declare(
                        name, exchange_type="fanout", durable=True, callback=done
                    ),
                    timeout,
                    f"declaring exchange {name!r}",
                )
                arguments = {"x-message-ttl": ttl_ms, "x-dead-letter-exchange": ""}
                admin.call(
                    lambda ch, done: ch.queue_declare(
                        name, durable=True, arguments=arguments, callback=done
                    ),
                    timeout,
                    f"declaring wait queue {name!r}",
                )
                admin.call(
                    lambda ch, done: ch.queue_bind(name, name, callback=done),
                    timeout,
                    f"binding wait queue {name!r}",
                )
            except BaseException:
                self._admin = None
                raise
            self._wait_queues.add((admin.generation, ttl_ms))
        return name

    def declare(self, topic: str, group: str) -> None:
        queue = group_queue(self.options.exchange, topic, group)
        exchange = exchange_for(self.options.exchange, topic)
        with self._admin_lock:
            admin = self._admin_channel()
            try:
                self._ensure_exchanges(admin)
                self._declare_queue(admin, queue)
                admin.call(
                    lambda ch, done: ch.queue_bind(
                        queue, exchange, routing_key=topic, callback=done
                    ),
                    self.options.operation_timeout,
                    f"binding {queue!r} to {topic!r}",
                )
            except BaseException:
                self._admin = None  # a refused declaration closes the channel
                raise

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        exchange = exchange_for(self.options.exchange, topic)
        items = [
            (
                exchange,
                topic,
                message.body,
                # a request only makes sense while its caller waits on this connection:
                # persisting it across a broker restart could never produce a reply
                _properties(
                    message, TRANSIENT if message.reply_to == DIRECT_REPLY_TO else PERSISTENT
                ),
            )
            for message in messages
        ]
        self._publisher.send(items, f"publishing to {topic!r}")

    # -- consuming -----------------------------------------------------------------------------
    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> RabbitSubscription:
        subscription = RabbitSubscription(self, topic, group, prefetch, ack_timeout)
        subscription.attach()
        with self._subscriptions_lock:
            self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: RabbitSubscription) -> None:
        with self._subscriptions_lock:
            self._subscriptions.discard(subscription)

    def _reconnected(self, generation: int) -> None:
        # on the I/O thread: consumers come back without waiting for their next receive(),
        # so an ephemeral subscription misses as little as possible
        if generation > 1:
            threading.Thread(
                target=self._reattach_all, name=f"{self._link.name}-reattach", daemon=True
            ).start()

    def _reattach_all(self) -> None:
        with self._subscriptions_lock:
            detached = [s for s in self._subscriptions if not s.attached and not s.closed]
        for subscription in detached:
            try:
                subscription.attach()
            except Error as err:
                log.debug("anyqueue: re-attaching %r later: %s", subscription.topic, err)

    # -- request / reply -----------------------------------------------------------------------
    def open_inbox(self) -> Inbox:
        inbox = RabbitInbox()
        self._inbox = inbox
        self._publisher.attach_inbox(inbox)
        return Inbox(DIRECT_REPLY_TO, inbox, listen=inbox.listen)

    def send_reply(self, address: str, message: Message) -> None:
        self._replier.send_without_confirm(
            [("", address, message.body, _properties(message, TRANSIENT))]
        )

    # -- errors and lifecycle --------------------------------------------------------------------
    def classify_error(self, error: BaseException) -> type[Error]:
        if isinstance(
            error,
            (
                pika.exceptions.AMQPConnectionError,
                pika.exceptions.ConnectionWrongStateError,
                OSError,
            ),
        ):
            return ConnectionError
        if (
            isinstance(error, pika.exceptions.ChannelClosedByBroker)
            and error.reply_code == 406
            and "inequivalent arg" in error.reply_text
        ):
            return ConfigError
        return Error

    def drop_connections(self) -> None:
        """Test hook: cut the TCP connection as a network failure would (it reconnects)."""
        if not self._link.drop():
            raise ConnectionError("no open connection to drop")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._subscriptions_lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            with contextlib.suppress(Error):
                subscription.close()
        if self._inbox is not None:
            self._inbox.close()
        self._link.close(self.options.operation_timeout)
