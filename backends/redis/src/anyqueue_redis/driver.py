"""`redis://`, `rediss://` — groups as Redis lists with real leases, driven by Lua scripts.

URL: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTION=VALUE&...]`; `rediss://` for TLS, where
certificates and host names are always verified (`ssl_ca_certs=PATH` for a private CA,
`ssl_certfile` / `ssl_keyfile` for a client certificate).

| feature             | redis://                                                          |
|---------------------|-------------------------------------------------------------------|
| ordering            | global per group (one consumer)                                   |
| durable             | only when the server runs `appendonly yes` + `appendfsync always` |
|                     | (checked at connect; otherwise a warning and `durable=False`)     |
| ack timeout         | yes: lease deadlines, reaped by receivers' scripts                |
| dead consumers      | leases return after `consumer_timeout` without a heartbeat        |
| nack(delay)         | yes: a sorted set of due times                                    |
| wildcards `*` `#`   | yes: matched inside the publish script                            |
| max body            | 16 MiB                                                            |
| request/reply       | native: a private reply list that expires; one write per answer   |

Options: `prefix` (default `anyqueue`: every key starts with it), `consumer_timeout` (30 s),
`retry_timeout` (10 s), `socket_timeout` (30 s), `connect_timeout` (5 s), `ssl_ca_certs`,
`ssl_certfile`, `ssl_keyfile`. Needs Redis 7.0 or newer. The key layout and the semantics are
described in docs/backends/redis.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import redis
from redis.exceptions import NoScriptError

from anyqueue.capabilities import Capabilities
from anyqueue.config import BrokerURL
from anyqueue.driver import Driver, Inbox, SubscriptionDriver
from anyqueue.envelope import pack, unpack
from anyqueue.errors import Closed, ConfigError, ConnectionError, Error
from anyqueue.message import Message
from anyqueue.names import is_pattern

from . import scripts
from .connection import (
    RETRYABLE,
    Command,
    Connections,
    Link,
    ScriptCall,
    is_retryable,
    load_scripts,
    pipeline_on,
    readable,
)
from .keys import INBOX_ADDRESS_PREFIX, GroupKeys, Layout, check_prefix, new_token
from .plugin import CAPABILITIES

log = logging.getLogger("anyqueue.redis")

#: the most messages one lease, ack or nack script handles (the scripts' arrays stay small)
MAX_PER_SCRIPT = 1000
#: a publish_batch is split into scripts of at most this many messages / bytes
MAX_PUBLISH_MESSAGES = 5000
MAX_PUBLISH_BYTES = 32 * 1024 * 1024
#: a reply list nobody reads expires this long after the last reply was pushed
INBOX_TTL_MS = 60_000
#: the longest a server waits after answering a request before it leases (and so reaps the
#: group's timers) again: its answer, not waited for, cannot tell when the next timer is due
ANSWERED_WAIT = 1.0
#: the longest single wait of an inbox's reply listener (it then simply waits again)
LISTEN_WAIT = 5.0
MIN_SERVER_VERSION = (7, 0)  # BLMPOP, LPOP with a count, ZADD GT
_INBOX_TOKEN = re.compile(r"[0-9a-f]{32}")
_BLMPOP = Command("BLMPOP")  # packed by hand: redis-py's generic packing costs more


@dataclass(frozen=True)
class RedisOptions:
    """Options of `redis://` and `rediss://` URLs (query parameters or connect() keywords)."""

    #: every key starts with this, so applications can share a database without meeting
    prefix: str = "anyqueue"
    #: a consumer not heard from for this long is presumed dead and its leases go back
    consumer_timeout: float = 30.0
    #: how long a call keeps reconnecting before it raises ConnectionError (connect included)
    retry_timeout: float = 10.0
    #: how long to wait for a reply to a command before treating the connection as dead
    socket_timeout: float = 30.0
    connect_timeout: float = 5.0
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if self.consumer_timeout < 0.5:
            raise ValueError(
                f"consumer_timeout must be >= 0.5 seconds, not {self.consumer_timeout}"
            )
        for name in ("retry_timeout", "socket_timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, not {getattr(self, name)}")


class _Sent(NamedTuple):
    """A settling command sent without waiting for its answer, and the consumer it is for."""

    consumer: str
    call: ScriptCall | Command
    args: list[Any]


class Receipt(NamedTuple):
    """What settles one delivery: who holds the lease, which entry, and which delivery of it."""

    consumer: str
    entry: bytes
    delivery_count: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDriver(Driver):
    """Connections to one Redis server (see the module docstring)."""

    Options = RedisOptions

    def __init__(self, url: BrokerURL, options: RedisOptions) -> None:
        super().__init__(url, options)
        if url.scheme not in ("redis", "rediss"):
            raise ConfigError(f"the redis backend takes redis:// or rediss:// URLs, not {url}")
        self.layout = Layout(options.prefix)
        self.link = Link()
        #: the name every connection of this driver carries (CLIENT LIST shows it)
        self.client_name = f"anyqueue-{new_token()}"
        self.connections = Connections(
            url, options, self.link, self.client_name, options.retry_timeout
        )
        self._lock = threading.Lock()
        self._subscriptions: set[RedisSubscription] = set()
        self._keeper: _Keeper | None = None
        self._closed = False
        #: the packed head of the publish script per topic (a small cache)
        self._publish_calls: dict[str, ScriptCall] = {}
        self._reply_commands: dict[str, tuple[Command, Command]] = {}
        try:
            self._capabilities, self.server_version = self.connections.retrying(
                self._inspect_server
            )
        except redis.RedisError as err:
            self.connections.close()
            kind = ConnectionError if isinstance(err, RETRYABLE) else Error
            raise kind(f"cannot connect to {url.redacted()}: {err}") from err
        except BaseException:
            self.connections.close()
            raise

    # -- connect-time checks ---------------------------------------------------------------------
    def _inspect_server(self, connection: redis.Connection) -> tuple[Capabilities, tuple[int, ...]]:
        connection.send_command("INFO", "server")
        info = dict(
            line.split(":", 1)
            for line in _text(connection.read_response()).splitlines()
            if ":" in line
        )
        release = info.get("redis_version", "0")
        version = tuple(int(part) for part in release.split(".")[:3] if part.isdigit())
        if version[:2] < MIN_SERVER_VERSION:
            raise ConfigError(
                f"anyqueue needs Redis {'.'.join(map(str, MIN_SERVER_VERSION))} or newer; "
                f"{self.url.host} runs {release}"
            )
        load_scripts(connection)
        durable, reason = self._persistence(connection)
        if not durable:
            log.warning(
                "redis at %s:%s does not persist every write (%s): messages may be lost if the "
                "server stops, so capabilities.durable is False. Run it with `appendonly yes` "
                "and `appendfsync always` for durable groups.",
                self.url.host,
                self.url.port or 6379,
                reason,
            )
        return dataclasses.replace(CAPABILITIES, durable=durable), version

    def _persistence(self, connection: redis.Connection) -> tuple[bool, str]:
        """Whether the server writes every accepted message to disk before replying."""
        names = ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy")
        settings: dict[str, str] = {}
        for reply in pipeline_on(connection, [("CONFIG", "GET", name) for name in names]):
            if isinstance(reply, Exception):  # e.g. CONFIG renamed away on a managed service
                return False, f"its settings cannot be read: {reply}"
            for i in range(0, len(reply) - 1, 2):
                settings[_text(reply[i])] = _text(reply[i + 1])
        appendonly = settings.get("appendonly", "?")
        appendfsync = settings.get("appendfsync", "?")
        if appendonly != "yes" or appendfsync != "always":
            return False, f"appendonly={appendonly}, appendfsync={appendfsync}"
        policy = settings.get("maxmemory-policy", "?")
        if settings.get("maxmemory", "0") != "0" and policy != "noeviction":
            return False, f"maxmemory-policy={policy} may evict messages"
        return True, "appendonly=yes, appendfsync=always"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- groups and publishing -------------------------------------------------------------------
    def _route(self, binding: str, *, ephemeral: bool) -> tuple[str, str]:
        """Where a group bound to `binding` is registered, and the value registering it."""
        kind = "e" if ephemeral else "d"
        if is_pattern(binding):
            return self.layout.patterns, f"{kind}|{binding}"
        return self.layout.route(binding), kind

    def declare(self, topic: str, group: str) -> None:
        keys = self.layout.group(topic, group)
        route_key, route_value = self._route(topic, ephemeral=False)
        self.connections.run(
            scripts.ATTACH,
            [route_key, self.layout.catalog, keys.key("timers"), keys.key("alive")],
            [keys.base, route_value, f"{topic}\n{group}", "", 0, 0],
        )

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        envelopes = [pack(message, topic=topic) for message in messages]
        call = self._publish_calls.get(topic)
        if call is None:
            if len(self._publish_calls) >= 1024:
                self._publish_calls.clear()
            call = ScriptCall(scripts.PUBLISH, [self.layout.route(topic), self.layout.patterns])
            self._publish_calls[topic] = call
        for chunk in _publish_chunks(envelopes):
            args = [topic, *chunk]
            # a retry after a lost reply may store the chunk twice: at least once, never lost
            self.connections.retrying(partial(call.run, args=args))

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> RedisSubscription:
        ephemeral = group is None
        name = group if group is not None else f"~{new_token()}"
        route_key, route_value = self._route(topic, ephemeral=ephemeral)
        subscription = RedisSubscription(
            self,
            topic,
            self.layout.group(topic, name),
            route_key=route_key,
            route_value=route_value,
            catalog_value="" if ephemeral else f"{topic}\n{name}",
            ephemeral=ephemeral,
            ack_timeout=ack_timeout,
        )
        try:
            self.connections.retrying(lambda _: subscription._attach())
        except BaseException:
            subscription._discard()
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._subscriptions.add(subscription)
                if self._keeper is None:
                    self._keeper = _Keeper(self)
                    self._keeper.start()
        if closed:
            subscription.close()
            raise Closed("the redis driver is closed")
        return subscription

    def _forget(self, subscription: RedisSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def _open_subscriptions(self) -> list[RedisSubscription]:
        with self._lock:
            return list(self._subscriptions)

    # -- request / reply -------------------------------------------------------------------------
    def open_inbox(self) -> Inbox:
        token = new_token() + new_token()
        inbox = RedisInbox(self, token)
        return Inbox(INBOX_ADDRESS_PREFIX + token, inbox, listen=inbox.listen)

    def inbox_key(self, address: str) -> str | None:
        """The reply list of an inbox address from `open_inbox`; None for any other address."""
        token = address[len(INBOX_ADDRESS_PREFIX) :]
        if not address.startswith(INBOX_ADDRESS_PREFIX) or not _INBOX_TOKEN.fullmatch(token):
            return None
        return self.layout.inbox(token)

    def reply_commands(self, address: str) -> tuple[Command, Command] | None:
        """RPUSH and PEXPIRE of an inbox address's reply list (a small cache: a server answers
        the same few requesters over and over); None if it is not a Redis inbox."""
        commands = self._reply_commands.get(address)
        if commands is None:
            key = self.inbox_key(address)
            if key is None:
                return None
            if len(self._reply_commands) >= 1024:
                self._reply_commands.clear()
            commands = (Command("RPUSH", key), Command("PEXPIRE", key))
            self._reply_commands[address] = commands
        return commands

    def send_reply(self, address: str, message: Message) -> None:
        inbox = self.inbox_key(address)
        if inbox is None:
            super().send_reply(address, message)  # not one of our inboxes: an ordinary topic
            return
        commands = [
            ("RPUSH", inbox, pack(message, topic=address)),
            ("PEXPIRE", inbox, INBOX_TTL_MS),
        ]
        for reply in self.connections.retrying(lambda c: pipeline_on(c, commands)):
            if isinstance(reply, Exception):
                raise reply

    # -- errors and lifecycle --------------------------------------------------------------------
    def classify_error(self, error: BaseException) -> type[Error]:
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            return ConnectionError  # includes failed logins and a server still loading its data
        if isinstance(error, redis.ResponseError) and str(error).startswith(
            ("NOAUTH", "WRONGPASS", "NOPERM")
        ):
            return ConnectionError
        return super().classify_error(error)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions, self._subscriptions = list(self._subscriptions), set()
            keeper, self._keeper = self._keeper, None
        for subscription in subscriptions:
            subscription.close()
        if keeper is not None:
            keeper.stop()
        self.connections.close()


def _send_packed(connection: redis.Connection, commands: list[list[bytes]]) -> list[Any]:
    """Send packed commands in one write; read every reply (an error reply in its place)."""
    connection.send_packed_command([b"".join(chunk for command in commands for chunk in command)])
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as err:
            replies.append(err)
    return replies


def _publish_chunks(envelopes: list[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for envelope in envelopes:
        full = len(chunk) >= MAX_PUBLISH_MESSAGES or size + len(envelope) > MAX_PUBLISH_BYTES
        if chunk and full:
            yield chunk
            chunk, size = [], 0
        chunk.append(envelope)
        size += len(envelope)
    if chunk:
        yield chunk


class RedisSubscription(SubscriptionDriver):
    """One consumer of a group. Its leases are registered under a consumer id; when the driver
    learns that its link dropped, the subscription gives those leases back and continues under a
    new id, so acks for deliveries from before the drop are discarded."""

    def __init__(
        self,
        driver: RedisDriver,
        topic: str,
        keys: GroupKeys,
        *,
        route_key: str,
        route_value: str,
        catalog_value: str,
        ephemeral: bool,
        ack_timeout: float | None,
    ) -> None:
        self._driver = driver
        self._topic = topic
        self._keys = keys
        self._wake_key = keys.subscriber_wake(new_token())
        self._route_key = route_key
        self._route_value = route_value
        self._catalog_value = catalog_value
        self._ephemeral = ephemeral
        self._ack_timeout_ms = round(ack_timeout * 1000) if ack_timeout else 0
        self._alive_ms = round(driver.options.consumer_timeout * 1000)
        #: an ephemeral group's keys outlive a silent subscriber by this much, then expire
        self._keep_ms = 2 * self._alive_ms if ephemeral else 0
        self._group_keys = keys.all
        self._ack = ScriptCall(scripts.ACK, self._group_keys)
        self._nack = ScriptCall(scripts.NACK, self._group_keys)
        self._extend = ScriptCall(scripts.EXTEND, self._group_keys)
        self._answered = ScriptCall(scripts.ANSWERED, self._group_keys)
        self._heartbeat = ScriptCall(scripts.HEARTBEAT, [*self._group_keys, route_key])
        self._lock = threading.RLock()
        self._epoch = driver.link.epoch
        self._closed = False
        self._failing_since: float | None = None
        #: the entry under which a receive of this consumer is registered as waiting, if any
        self._waiting_entry = ""
        #: answering a request registered it as waiting: the next receive blocks at once
        self._answered_wait = False
        #: receives (which block) go over one connection, acks, nacks, extends and answers to
        #: requests over the other, acks and answers without waiting for Redis' answers; a drop
        #: of either is a drop of the consumer
        self._receiver: redis.Connection | None = driver.connections.dedicated()
        self._receiving = threading.Lock()
        self._settler = driver.connections.dedicated()
        self._unconfirmed: list[_Sent] = []
        #: acks (and answers) to send again: their answers were lost with a connection
        self._unsent: list[_Sent] = []
        self._become(new_token())

    def _become(self, consumer: str) -> None:
        """Take `consumer` as the id to lease under (and its box to wait on)."""
        self._consumer = consumer
        self._box = self._keys.box(consumer)
        self._lease = ScriptCall(scripts.LEASE, [*self._group_keys, self._box])

    # -- consumer identity -----------------------------------------------------------------------
    def _attach(self) -> None:
        """Bind the group and register the consumer; this also connects both connections of
        the subscription, so that a drop from now on is a reconnect the Link hears about."""
        assert self._receiver is not None
        self._receiver.connect()
        connection = self._settler
        with self._lock:
            consumer = self._consumer
        keys = self._keys
        attach = ScriptCall(
            scripts.ATTACH,
            [self._route_key, self._driver.layout.catalog, keys.key("timers"), keys.key("alive")],
        )
        attach.run(
            connection,
            [
                keys.base,
                self._route_value,
                self._catalog_value,
                consumer,
                self._alive_ms,
                self._keep_ms,
            ],
        )

    def _current_consumer(self, connection: redis.Connection) -> str:
        """The consumer id to lease and settle under, on `connection`; call with the lock held.
        Connecting first makes a reconnect, and so news of a drop, known before the check."""
        if connection._sock is None:  # type: ignore[attr-defined]
            connection.connect()
        epoch = self._driver.link.epoch
        if epoch != self._epoch:
            previous, waiting = self._consumer, self._waiting_entry
            self._epoch, self._waiting_entry, self._answered_wait = epoch, "", False
            self._become(new_token())
            log.info("redis: the link dropped; %r gives back the leases held before", self)
            # a restarted server forgot the scripts: load them all now, so that none of a
            # pipeline sent without waiting (reply, then ack) is refused for that
            load_scripts(connection)
            self._release(connection, previous, waiting, successor=self._consumer)
        return self._consumer

    def _release(
        self, connection: redis.Connection, consumer: str, waiting: str, *, successor: str
    ) -> None:
        """Hand back `consumer`'s leases; `successor` continues, or ("") the subscription is
        closing (waking its blocked receive, and ending an ephemeral group)."""
        closing = not successor
        drop_group = self._ephemeral and closing
        release = ScriptCall(
            scripts.RELEASE,
            [*self._group_keys, self._keys.box(consumer), self._wake_key, self._route_key],
        )
        release.run(
            connection,
            [
                consumer,
                "1" if drop_group else "0",
                "1" if closing else "0",
                successor,
                self._alive_ms,
                waiting,
            ],
        )

    def _sync_link(self, connection: redis.Connection) -> None:
        """For the heartbeat thread: give back leases from before a dropped link now, not at
        the next receive or ack; and make sure acks sent earlier arrived (resending those lost
        with a connection), however long it is until the next settle."""
        with self._lock:
            if not self._closed:
                self._current_consumer(connection)
                if self._unconfirmed or self._unsent:
                    self._settler_ready()

    def _heartbeat_command(self) -> list[bytes] | None:
        """This consumer's heartbeat (packed), or None once closed."""
        with self._lock:
            if self._closed:
                return None
            consumer = self._consumer
        return self._heartbeat.pack(
            [consumer, self._alive_ms, self._keep_ms, self._keys.base, self._route_value]
        )

    # -- receiving -------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        wanted = max(1, min(max_messages, MAX_PER_SCRIPT))
        socket_timeout = self._driver.options.socket_timeout
        while not self._closed:
            try:
                with self._receive_connection(deadline - time.monotonic()) as connection:
                    if connection is None:
                        return []
                    while True:
                        remaining = deadline - time.monotonic()
                        with self._lock:
                            if self._closed:
                                return []
                            consumer = self._current_consumer(connection)
                            box = self._box
                            # answering the last request registered it as waiting already
                            answered, self._answered_wait = self._answered_wait, False
                            if not (answered and self._waiting_entry):
                                answered = False
                                reply = self._lease.run(
                                    connection,
                                    [
                                        consumer,
                                        wanted,
                                        self._ack_timeout_ms,
                                        self._alive_ms,
                                        self._keep_ms,
                                        "1" if remaining >= 0.001 else "0",
                                        self._waiting_entry,
                                    ],
                                )
                                self._waiting_entry = _text(reply[1]) if len(reply) == 2 else ""
                        if answered:
                            wait = min(remaining, ANSWERED_WAIT)
                        else:
                            self._failing_since = None
                            if len(reply) > 2:
                                return self._messages(reply, 1, consumer)
                            if len(reply) == 1:
                                return []  # time is up (and no longer registered as waiting)
                            due_ms = reply[0]
                            wait = remaining if due_ms < 0 else min(remaining, due_ms / 1000)
                        # blocked until a publish (or nack...) leases messages into the box, or
                        # close() wakes it; when the wait ends empty, the next lease call
                        # takes it off the waiting list (collecting what arrived meanwhile)
                        connection.send_packed_command(
                            _BLMPOP.pack(
                                [
                                    f"{max(wait, 0.001):.3f}",
                                    2,
                                    box,
                                    self._wake_key,
                                    "LEFT",
                                    "COUNT",
                                    3 * wanted,
                                ]
                            )
                        )
                        popped = connection.read_response(timeout=wait + socket_timeout)
                        if popped is not None:
                            with self._lock:
                                self._waiting_entry = ""
                            if _text(popped[0]) != box:
                                return []  # woken by close()
                            return self._messages(popped[1], 0, consumer)
            except (Closed, *RETRYABLE, OSError, ValueError) as err:
                if self._closed or self._driver.link.closed:
                    return []  # close() cut the connection under a blocked receive
                if isinstance(err, (Closed, OSError, ValueError)):
                    raise
                self._failed(err)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                time.sleep(min(0.1, remaining))
        return []

    @contextlib.contextmanager
    def _receive_connection(self, timeout: float) -> Iterator[redis.Connection | None]:
        """The receiving connection, once no other receive uses it (None if that takes longer
        than `timeout`): one receive at a time keeps the waiting registration consistent."""
        if not self._receiving.acquire(timeout=max(timeout, 0.0)):
            yield None
            return
        try:
            if self._receiver is None:  # closed meanwhile
                raise Closed("the subscription is closed")
            yield self._receiver
        finally:
            if self._closed:
                self._give_back_receiver()
            self._receiving.release()

    def _give_back_receiver(self) -> None:
        """With `_receiving` held: return the receiving connection to the driver, once."""
        if self._receiver is not None:
            self._driver.connections.give_back(self._receiver)
            self._receiver = None

    def _failed(self, err: Exception) -> None:
        """A call failed on a lost connection: keep trying until `retry_timeout`, then raise."""
        if not is_retryable(err) or self._driver.link.closed:
            raise err
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self._driver.options.retry_timeout:
            self._failing_since = None
            raise err

    def _messages(self, reply: list[Any], start: int, consumer: str) -> list[Message]:
        """Messages from `reply[start:]`: entry, delivery count, envelope for each."""
        messages = []
        for i in range(start, len(reply), 3):
            entry, count, envelope = reply[i], int(reply[i + 1]), reply[i + 2]
            receipt = Receipt(consumer, entry, count)
            try:
                message, extra = unpack(
                    envelope, delivery_count=count, redelivered=count > 1, receipt=receipt
                )
            except Error as err:
                # not written by anyqueue: hand it over as raw bytes rather than wedge the group
                log.error("redis group %s: entry %r is %s", self._keys.base, entry, err)
                message = Message(
                    envelope,
                    id=f"redis-{_text(entry)}",
                    delivery_count=count,
                    redelivered=count > 1,
                    receipt=receipt,
                )
                extra = {}
            message.topic = extra.get("topic") or self._topic
            messages.append(message)
        return messages

    # -- settling --------------------------------------------------------------------------------
    def ack(self, messages: Sequence[Message]) -> None:
        """Acks are sent without waiting for the server's answer (as AMQP's basic.ack): the
        answers are read before the next settle, and before close() hands anything back."""
        self._settle(self._ack, ["1" if self._ack_timeout_ms else "0"], messages, confirm=False)

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        delay_ms = -1 if not delay or delay <= 0 else max(1, round(delay * 1000))
        self._settle(self._nack, [delay_ms, self._keep_ms, self._alive_ms], messages)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        if not self._ack_timeout_ms:
            return  # without an ack timeout a lease lasts as long as its consumer
        self._settle(self._extend, [max(1, round(seconds * 1000))], messages)

    def reply_and_ack(self, request: Message, address: str, reply: Message) -> bool:
        """Answer `request` with one write on the settling connection, sent without waiting
        for Redis' answer (like an ack): RPUSH and PEXPIRE put `reply` into the requester's
        inbox, then the ANSWERED script acks the request and, unless a receive is running,
        registers this consumer as waiting for one message. The next receive then blocks on
        its box at once; and as Redis answers the requester only after handling the whole
        write, the next request finds the server waiting, and its publish leases it straight
        into the box. One write per request on the server's side instead of three round trips
        (reply, ack, lease), and no fsync of the server's own between two requests. False (the
        core then replies and acks itself) when `address` is not a Redis inbox or the
        subscription is closed."""
        commands = self._driver.reply_commands(address)
        receipt = request.receipt
        if commands is None or not isinstance(receipt, Receipt):
            return False
        push, expire = commands
        envelope = pack(reply, topic=address)
        failing_since: float | None = None
        while True:
            try:
                with self._lock:
                    if self._closed:
                        return False
                    connection = self._settler
                    consumer = self._settler_ready()
                    # plain commands first: a server that forgot its scripts cannot refuse the
                    # reply and then take the ack
                    sent = [
                        _Sent(consumer, push, [envelope]),
                        _Sent(consumer, expire, [INBOX_TTL_MS]),
                    ]
                    waiting = ""
                    if receipt.consumer == consumer:  # else stale: the request went back
                        if not self._waiting_entry and not self._receiving.locked():
                            waiting = f"{consumer}:1:{self._ack_timeout_ms}:{2 * self._alive_ms}"
                        args = [
                            consumer,
                            self._ack_timeout_ms,
                            self._alive_ms,
                            self._keep_ms,
                            waiting,
                            receipt.entry,
                            receipt.delivery_count,
                        ]
                        sent.append(_Sent(consumer, self._answered, args))
                    connection.send_packed_command(
                        [b"".join(chunk for each in sent for chunk in each.call.pack(each.args))]
                    )
                    self._unconfirmed += sent
                    if waiting:
                        self._waiting_entry, self._answered_wait = waiting, True
                    request.receipt = None  # settled here: the core's ack that follows is a no-op
                    return True
            except RETRYABLE as err:
                # the write failed, perhaps half-way (the reply sent, not the ack): send it
                # again; after the reconnect the lease is no longer ours, so only the reply goes
                # (a duplicate is dropped by the requester) and the request comes back
                failing_since = self._pause_before_retry(err, failing_since)

    def _settle(
        self,
        call: ScriptCall,
        args: list[Any],
        messages: Sequence[Message],
        *,
        confirm: bool = True,
    ) -> None:
        receipts = [m.receipt for m in messages if isinstance(m.receipt, Receipt)]
        failing_since: float | None = None
        while receipts and not self._closed:
            try:
                with self._lock:
                    if self._closed:
                        return
                    connection = self._settler
                    consumer = self._settler_ready()
                    # receipts from before a dropped link are stale: their messages went back
                    current = [r for r in receipts if r.consumer == consumer]
                    for start in range(0, len(current), MAX_PER_SCRIPT):
                        pairs: list[Any] = []
                        for receipt in current[start : start + MAX_PER_SCRIPT]:
                            pairs += (receipt.entry, receipt.delivery_count)
                        if confirm:
                            call.run(connection, [consumer, *args, *pairs])
                        else:
                            sent = _Sent(consumer, call, [consumer, *args, *pairs])
                            connection.send_packed_command(call.pack(sent.args))
                            self._unconfirmed.append(sent)
                    return
            except RETRYABLE as err:
                failing_since = self._pause_before_retry(err, failing_since)

    def _pause_before_retry(self, err: Exception, failing_since: float | None) -> float:
        """A settling write failed: re-raise `err` unless it is worth retrying and has been
        failing for less than `retry_timeout`; otherwise pause briefly. Returns when the
        failures began, for the next call."""
        now = time.monotonic()
        failing_since = now if failing_since is None else failing_since
        if (
            not is_retryable(err)
            or self._driver.link.closed
            or now - failing_since >= self._driver.options.retry_timeout
        ):
            raise err
        time.sleep(0.05)
        return failing_since

    def _settler_ready(self) -> str:
        """With the lock held: make the settling connection ready for the next command, and
        return the consumer id to settle under. Reads the answers to acks (and answered
        requests) sent before; an ack whose answer was lost with a connection is sent again
        (acks are idempotent: the script only removes a lease the consumer still holds; a reply
        sent twice is dropped by its requester), unless its consumer has been replaced since —
        then its message went back to the group."""
        connection = self._settler
        pending, self._unconfirmed = self._unconfirmed, []
        forgotten = []
        for index, sent in enumerate(pending):
            try:
                connection.read_response()
            except NoScriptError:
                forgotten.append(sent)  # the server restarted and forgot the script
            except redis.ResponseError as err:
                log.error("redis: %s failed on %s: %s", sent.call.name, self._keys.base, err)
            except RETRYABLE:
                self._unsent += pending[index:]
                raise
        # the server may have closed it since its last answer: something to read now is EOF
        # (or data nobody asked for); it is reconnected below, which tells the Link
        if readable(connection):
            connection.disconnect()
        consumer = self._current_consumer(connection)
        unsent, self._unsent = forgotten + self._unsent, []
        for sent in unsent:
            if sent.consumer == consumer:
                args = sent.args
                if sent.call is self._answered:
                    # only the ack: the receive it registered a wait for has moved on
                    args = [*args[:4], "", *args[5:]]
                sent.call.run(connection, args)
        return consumer

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumer, waiting = self._consumer, self._waiting_entry
            self._driver._forget(self)
            try:
                # after the acks sent before, on the same connection: acked messages stay gone
                try:
                    self._settler_ready()
                except RETRYABLE:
                    self._settler_ready()  # the answers were lost with the connection: resend
                self._release(self._settler, consumer, waiting, successor="")
            except (redis.RedisError, Error) as err:
                log.warning(
                    "redis: could not hand back the leases of %r (%s); they return to the "
                    "group after consumer_timeout",
                    self,
                    err,
                )
            self._discard()

    def _discard(self) -> None:
        """Give both connections back; a receive still running gives back its own when it
        returns (close() woke it)."""
        self._driver.connections.give_back(self._settler)
        if self._receiving.acquire(blocking=False):
            try:
                self._give_back_receiver()
            finally:
                self._receiving.release()

    def __repr__(self) -> str:
        return f"<RedisSubscription {self._keys.base} consumer={self._consumer}>"


class RedisInbox(SubscriptionDriver):
    """The reply list of one Broker's requests. Replies are read once and need no ack: a reply
    whose requester is gone simply expires with the list."""

    def __init__(self, driver: RedisDriver, token: str) -> None:
        self._driver = driver
        self._address = INBOX_ADDRESS_PREFIX + token
        self._key = driver.layout.inbox(token)
        self._wake_key = driver.layout.inbox_wake(token)
        self._closed = False
        #: the thread pushing replies, once `listen` started it
        self.listener: threading.Thread | None = None

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        if self._closed:
            return []
        count = max(1, min(max_messages, MAX_PER_SCRIPT))
        wait = f"{max(timeout, 0.001):.3f}"
        read_timeout = timeout + self._driver.options.socket_timeout
        try:
            with self._driver.connections.lend() as connection:
                connection.send_command(
                    "BLMPOP", wait, 2, self._key, self._wake_key, "LEFT", "COUNT", count
                )
                popped = connection.read_response(timeout=read_timeout)
                if not popped or _text(popped[0]) != self._key:
                    return []
                items = popped[1]
        except RETRYABLE as err:
            if not is_retryable(err) or self._driver.link.closed:
                raise
            time.sleep(min(0.1, max(timeout, 0.0)))
            return []
        replies = []
        for item in items:
            message, _ = unpack(item, topic=self._address, delivery_count=1)
            replies.append(message)
        return replies

    def listen(self, on_reply: Callable[[Message], None]) -> None:
        """Push every reply to `on_reply` from a thread of the inbox's own (instead of the
        core's reader polling `receive`). It waits for the next reply again before handing
        over the ones it popped, so the caller it wakes does not wait for it."""
        self.listener = threading.Thread(
            target=self._listen, args=(on_reply,), name=f"{self._key}-replies", daemon=True
        )
        self.listener.start()

    def _listen(self, on_reply: Callable[[Message], None]) -> None:
        wait = _BLMPOP.pack(
            [f"{LISTEN_WAIT:.3f}", 2, self._key, self._wake_key, "LEFT", "COUNT", 100]
        )
        read_timeout = LISTEN_WAIT + self._driver.options.socket_timeout
        try:
            connection = self._driver.connections.dedicated()
        except Closed:
            return
        waiting = False  # a BLMPOP was sent and its answer is still to be read
        try:
            while not self._closed:
                try:
                    if not waiting:
                        connection.send_packed_command(wait)  # (re)connects if need be
                        waiting = True
                    popped = connection.read_response(timeout=read_timeout)
                    waiting = False
                    if popped is not None and _text(popped[0]) != self._key:
                        return  # woken by close()
                    connection.send_packed_command(wait)
                    waiting = True
                except (Closed, *RETRYABLE, OSError, ValueError) as err:
                    if self._closed or self._driver.link.closed:
                        return  # closing cut the connection under the wait
                    log.debug("redis: reading replies from %s: %s; retrying", self._key, err)
                    connection.disconnect()
                    waiting = False
                    time.sleep(0.1)
                    continue
                for item in popped[1] if popped is not None else ():
                    try:
                        reply, _ = unpack(item, topic=self._address, delivery_count=1)
                        on_reply(reply)
                    except Exception as err:  # the thread must live on: it reads every reply
                        log.error(
                            "redis: a reply in %s: %s: %s", self._key, type(err).__name__, err
                        )
        finally:
            if waiting:
                connection.disconnect()  # nobody else may read that BLMPOP's answer
            self._driver.connections.give_back(connection)

    def ack(self, messages: Sequence[Message]) -> None:
        """Replies were removed when read."""

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        """Replies were removed when read; there is nothing to give back."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._driver.connections.lend() as connection:
                pipeline_on(
                    connection,
                    [
                        ("DEL", self._key),
                        ("RPUSH", self._wake_key, "closed"),
                        ("PEXPIRE", self._wake_key, 60_000),
                    ],
                )
        except (redis.RedisError, Error) as err:
            log.debug("redis: closing reply inbox %s: %s", self._key, err)


class _Keeper(threading.Thread):
    """One per driver with subscriptions: heartbeats every consumer, so that leases of a process
    that dies come back after `consumer_timeout`; and waits in a blocking command between beats,
    so that a dropped link is noticed at once and the leases held before it are given back."""

    def __init__(self, driver: RedisDriver) -> None:
        super().__init__(name=f"{driver.client_name}-keeper", daemon=True)
        self._driver = driver
        self._stopping = threading.Event()
        self._wake_key = driver.layout.keeper_wake(new_token())
        self._interval = driver.options.consumer_timeout / 3

    def run(self) -> None:
        driver = self._driver
        while not self._stopping.is_set():
            try:
                with driver.connections.lend() as connection:
                    self._beat(connection)
                    connection.send_command("BLPOP", self._wake_key, f"{self._interval:.3f}")
                    connection.read_response(timeout=self._interval + driver.options.socket_timeout)
            except Exception as err:  # the thread must live on: it is what notices drops
                if self._stopping.is_set() or driver.link.closed:
                    return
                log.debug("redis heartbeat: %s: %s", type(err).__name__, err)
                self._stopping.wait(0.1)

    def _beat(self, connection: redis.Connection) -> None:
        subscriptions = self._driver._open_subscriptions()
        for subscription in subscriptions:
            subscription._sync_link(connection)
        beats = [c for c in (s._heartbeat_command() for s in subscriptions) if c is not None]
        if not beats:
            return
        replies = _send_packed(connection, beats)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            load_scripts(connection)  # the server restarted and forgot the scripts
            replies = _send_packed(connection, beats)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if any(replies):
            log.warning(
                "redis: an ephemeral subscription was silent longer than consumer_timeout and "
                "its group lapsed; it is bound again but missed what was published meanwhile"
            )

    def stop(self) -> None:
        self._stopping.set()
        try:
            with self._driver.connections.lend() as connection:
                pipeline_on(
                    connection,
                    [("RPUSH", self._wake_key, "stop"), ("PEXPIRE", self._wake_key, 60_000)],
                )
        except (redis.RedisError, Error):
            pass  # the server is gone; closing the connections ends the wait
        self.join(timeout=2.0)
