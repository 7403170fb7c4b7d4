"""The portable Broker: validation, encoding, error mapping and lifecycle over one Driver."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import errors
from .capabilities import Capabilities
from .config import BrokerURL, parse_options, scrub, secret_values
from .errors import Closed, ConfigError, Error, MessageTooLarge, NotSupported
from .message import Body, Message, check_headers, encode_body, new_id
from .names import check_name, check_topic_or_pattern, dead_letter_topic, is_pattern
from .plugins import BackendSpec, registry
from .subscription import Subscription

if TYPE_CHECKING:
    from types import TracebackType

    from .driver import Driver
    from .rpc import Requester
    from .worker import Handler, Worker

log = logging.getLogger("anyqueue")
R = TypeVar("R")
DEFAULT_URL = "memory://"


def connect(url: str | None = None, **options: Any) -> Broker:
    """Connect to the broker at `url` (None: `$ANYQUEUE_URL`, else the in-process `memory://`).

    The scheme picks the backend plugin; query parameters and keyword `options` configure it.
    """
    url = url or os.environ.get("ANYQUEUE_URL") or DEFAULT_URL
    parsed = BrokerURL.parse(url)
    spec = registry.for_scheme(parsed.scheme)
    driver_class = spec.load_driver()
    settings = parse_options(driver_class.Options, parsed.query, options)
    secrets = parsed.secrets() + secret_values(settings)
    try:
        driver = driver_class(parsed, settings)
    except Error as err:
        scrubbed = scrub(str(err), secrets)
        if scrubbed == str(err):
            raise
        raise type(err)(scrubbed) from err.__cause__
    except Exception as err:
        cls = errors.ConnectionError if isinstance(err, OSError) else Error
        raise cls(scrub(f"cannot connect to {parsed.redacted()}: {err}", secrets)) from err
    return Broker(spec, driver, parsed, secrets)


class Broker:
    """A connection to one broker: publish, subscribe, consume, request/reply.

    Safe to share between threads. Use as a context manager, or call `close()`.
    """

    def __init__(self, spec: BackendSpec, driver: Driver, url: BrokerURL, secrets: list[str]):
        self.backend = spec.name
        self.url = url.redacted()
        self._spec = spec
        self._driver = driver
        self._secrets = secrets
        self._closed = False
        self._lock = threading.Lock()
        self._declared: set[tuple[str, str]] = set()
        self._checked_topics: set[str] = set()
        self._children: weakref.WeakSet[Any] = weakref.WeakSet()
        self._requester: Requester | None = None
        self.capabilities: Capabilities = self._call(lambda: driver.capabilities)

    # -- error mapping -----------------------------------------------------------------------
    def _call(self, function: Callable[..., R], *args: Any) -> R:
        """Call into the driver; native exceptions become anyqueue errors, secrets scrubbed."""
        try:
            return function(*args)
        except Error:
            raise
        except Exception as err:
            raise self._translate(err) from err

    def _translate(self, err: BaseException) -> Error:
        cls = self._driver.classify_error(err)
        return cls(scrub(f"{self.backend}: {type(err).__name__}: {err}", self._secrets))

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"broker {self.url} is closed")

    # -- declaring ---------------------------------------------------------------------------
    def declare(self, topic: str, group: str) -> None:
        """Create the durable `group` on `topic` (or pattern): from now on messages published to
        the topic are kept for it, even while no member is connected. Idempotent."""
        self._check_open()
        self._check_target(topic)
        check_name(group, "group")
        if (topic, group) in self._declared:
            return
        self._call(self._driver.declare, topic, group)
        with self._lock:
            self._declared.add((topic, group))

    def _check_target(self, topic: str) -> None:
        check_topic_or_pattern(topic)
        if is_pattern(topic) and not self.capabilities.wildcards:
            raise NotSupported(
                f"{self.backend} does not support wildcard patterns ({topic!r}); "
                "subscribe to exact topic names"
            )

    # -- publishing --------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        body: Body,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        id: str | None = None,
    ) -> str:
        """Publish one message; return its id once the broker has accepted it."""
        data, default_type = encode_body(body)
        message = Message(
            data,
            key=key,
            headers=check_headers(headers),
            id=id,
            content_type=content_type or default_type,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
        return self._publish_messages(topic, [message])[0]

    def publish_batch(self, topic: str, messages: Iterable[Message | Body]) -> list[str]:
        """Publish several messages; return their ids, in order, once all are accepted."""
        batch = [
            Message.outgoing(item)
            if type(item) is bytes
            else _copy_outgoing(item)
            if isinstance(item, Message)
            else Message(item)
            for item in messages
        ]
        return self._publish_messages(topic, batch) if batch else []

    def _publish_messages(self, topic: str, messages: list[Message]) -> list[str]:
        self._check_open()
        if topic not in self._checked_topics:
            check_name(topic)
            self._checked_topics.add(topic)
        limit = self.capabilities.max_body_bytes
        unnamed = []
        for message in messages:
            if len(message.body) > limit:
                raise MessageTooLarge(
                    f"body of {len(message.body)} bytes exceeds {self.backend}'s limit of "
                    f"{limit} bytes; nothing was sent (store large payloads elsewhere and "
                    "publish a reference)"
                )
            if message.key is not None and not isinstance(message.key, str):
                raise TypeError(f"key must be str or None, not {type(message.key).__name__}")
            if not message.id:
                unnamed.append(message)
        for message, message_id in zip(unnamed, new_id.many(len(unnamed))):
            message.id = message_id
        self._call(self._driver.publish, topic, messages)
        return [message.id for message in messages]

    # -- consuming ---------------------------------------------------------------------------
    def subscribe(
        self,
        topic: str,
        group: str | None = None,
        *,
        prefetch: int = 10,
        ack_timeout: float | None = None,
    ) -> Subscription:
        """Receive from `group` on `topic` (a durable, shared group), or without a group from an
        ephemeral one that sees only messages published from now on."""
        self._check_open()
        self._check_target(topic)
        if group is not None:
            check_name(group, "group")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch must be a whole number >= 1, not {prefetch!r}")
        if ack_timeout is not None:
            if not self.capabilities.ack_timeout:
                raise NotSupported(f"{self.backend} does not support ack_timeout")
            if ack_timeout <= 0:
                raise ConfigError(f"ack_timeout must be > 0 seconds, not {ack_timeout!r}")
        driver_sub = self._call(
            lambda: self._driver.subscribe(topic, group, prefetch=prefetch, ack_timeout=ack_timeout)
        )
        if group is not None:
            with self._lock:
                self._declared.add((topic, group))
        subscription = Subscription(self, driver_sub, topic, group, prefetch, ack_timeout)
        self._children.add(subscription)
        return subscription

    def consume(
        self,
        topic: str,
        handler: Handler,
        group: str | None = None,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        max_deliveries: int | None = 5,
        ack_timeout: float | None = None,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
    ) -> Worker:
        """Run `handler(message)` on `concurrency` background threads. A return acks; an
        exception retries with exponential backoff; after `max_deliveries` the message goes to
        `<topic>.dead` (declared first, as group "dead") with the error in its headers."""
        from .worker import Worker

        self._check_open()
        if max_deliveries is not None:
            if not isinstance(max_deliveries, int) or max_deliveries < 1:
                raise ConfigError(f"max_deliveries must be >= 1 or None, not {max_deliveries!r}")
            self._check_target(topic)
            self.declare(dead_letter_topic(topic), "dead")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number >= 1, not {concurrency!r}")
        subscription = self.subscribe(
            topic, group, prefetch=prefetch or concurrency, ack_timeout=ack_timeout
        )
        worker = Worker(
            subscription,
            handler,
            concurrency=concurrency,
            max_deliveries=max_deliveries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            capabilities=self.capabilities,
        )
        self._children.add(worker)
        return worker

    # -- request / reply ---------------------------------------------------------------------
    def serve(
        self, topic: str, handler: Callable[[Message], Any], *, concurrency: int = 1
    ) -> Worker:
        """Answer requests on `topic`: the handler's return value (bytes, str, dict, list, a
        Message or None) is the reply; an exception comes back to the caller as RemoteError."""
        from .rpc import serve

        self._check_open()
        return serve(self, topic, handler, concurrency=concurrency)

    def request(
        self,
        topic: str,
        body: Body,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and wait for its reply; Timeout when none arrives in time."""
        from .rpc import Requester

        self._check_open()
        with self._lock:
            if self._requester is None:
                self._requester = Requester(self)
            requester = self._requester
        return requester.request(topic, body, timeout=timeout, headers=headers)

    # -- lifecycle ---------------------------------------------------------------------------
    def _forget(self, child: Any) -> None:
        self._children.discard(child)

    def close(self) -> None:
        """Stop workers, close subscriptions and the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # workers first: their handlers may still settle messages on their subscriptions
            children = sorted(self._children, key=lambda child: not hasattr(child, "stop"))
            requester, self._requester = self._requester, None
        for child in children:
            stop = getattr(child, "stop", None) or child.close
            try:
                stop()
            except Error as err:
                log.warning("anyqueue: error while closing %r: %s", child, err)
        if requester is not None:
            requester.close()
        self._call(self._driver.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Broker {self.url}{state}>"

    __str__ = __repr__


def _copy_outgoing(message: Message) -> Message:
    # a fresh object per publish, so reusing a Message never reuses its id
    return Message(
        message.body,
        key=message.key,
        headers=dict(message.headers),
        id=message.id or None,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
    )
