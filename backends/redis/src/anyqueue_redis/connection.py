"""Connections to Redis: lending them out, noticing dropped links, retrying, running scripts.

A dropped link matters to a consumer: deliveries leased before it must not be acked after it
(their messages went back to the group). Each connection reports its reconnects to a `Link`,
which counts *link epochs*: the first reconnect after a drop starts a new epoch, and the
subscriptions that see a new epoch give their leases back and continue under a new consumer id
(see driver.py). anyqueue turns redis-py's own retries off so that no reconnect goes unseen.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from anyqueue.config import BrokerURL
from anyqueue.errors import Closed, ConfigError

from . import scripts
from .scripts import Script

T = TypeVar("T")

#: redis-py errors after which a call is worth retrying on a fresh connection
RETRYABLE = (redis.ConnectionError, redis.TimeoutError)


def is_retryable(error: BaseException) -> bool:
    """A lost or refused connection is retried; a failed login or certificate check is not."""
    if isinstance(error, redis.AuthenticationError):
        return False
    if isinstance(error, RETRYABLE):
        cause = error.__cause__ or error.__context__
        return not isinstance(cause, ssl.SSLError)
    return False


class Link:
    """What a driver knows about its connections: the current epoch, and whether it is closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch = 0
        self.closed = False

    def connected(self, previous_epoch: int | None) -> int:
        """A connection (re)connected; it had last connected in `previous_epoch` (None: this is
        its first connect). A reconnect of a connection from the current epoch is news of a
        drop: start a new epoch. Reconnects of older ones belong to a drop already counted."""
        with self._lock:
            if previous_epoch is not None and previous_epoch == self.epoch:
                self.epoch += 1
            return self.epoch


class _Watched:
    """Mixed into redis-py's connection classes: report every (re)connect to the Link."""

    _link: Link
    _session_epoch: int | None

    def _watch(self, link: Link) -> None:
        self._link = link
        self._session_epoch = None
        self.register_connect_callback(self._on_connect)  # type: ignore[attr-defined]

    def _on_connect(self, connection: Any) -> None:
        self._session_epoch = self._link.connected(self._session_epoch)


class WatchedConnection(_Watched, redis.Connection):
    def __init__(self, *args: Any, link: Link, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch(link)


class WatchedSSLConnection(_Watched, redis.SSLConnection):
    def __init__(self, *args: Any, link: Link, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch(link)


def connection_settings(url: BrokerURL, options: Any) -> dict[str, Any]:
    """redis-py connection keywords for a `redis://` or `rediss://` URL and the driver options."""
    path = url.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ConfigError(
            f"the path of a redis URL is the database number, not {url.path!r}"
        ) from None
    settings: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 6379,
        "db": db,
        "username": url.username or None,
        "password": url.password,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # anyqueue retries, so that it notices every drop
        "protocol": 2,
    }
    ssl_options = {
        "ssl_ca_certs": options.ssl_ca_certs,
        "ssl_certfile": options.ssl_certfile,
        "ssl_keyfile": options.ssl_keyfile,
    }
    if url.scheme == "rediss":
        # certificates and host names are always verified; there is no option to turn that off
        settings.update(ssl_options, ssl_cert_reqs="required", ssl_check_hostname=True)
    elif any(ssl_options.values()):
        raise ConfigError("ssl_* options need a rediss:// URL")
    return settings


def _connection_class(url: BrokerURL) -> type[redis.Connection]:
    return WatchedSSLConnection if url.scheme == "rediss" else WatchedConnection


def plain_client(url: BrokerURL, options: Any) -> redis.Redis:
    """An ordinary redis-py client for the same server (benchmarks, test harnesses)."""
    settings = connection_settings(url, options)
    settings["retry"] = Retry(NoBackoff(), 3)
    return redis.Redis(**settings)


class Connections:
    """Lends connections to one call at a time: the last one returned, or a new one. Much
    cheaper per call than redis-py's pool; a connection that dropped simply reconnects on its
    next command (and its Link hears about it). Connections carry `client_name`, so test
    harnesses can find and cut them with CLIENT KILL."""

    def __init__(
        self, url: BrokerURL, options: Any, link: Link, client_name: str, retry_timeout: float
    ) -> None:
        connection_class = _connection_class(url)
        settings = connection_settings(url, options)
        self._make = lambda: connection_class(link=link, client_name=client_name, **settings)
        self.link = link
        self._retry_timeout = retry_timeout
        self._idle: deque[redis.Connection] = deque()
        self._everyone: weakref.WeakSet[redis.Connection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def dedicated(self) -> redis.Connection:
        """A connection for one owner to keep (closed with the others); `give_back` returns it."""
        if self.link.closed:
            raise Closed("the redis connection is closed")
        connection = self._make()
        with self._lock:
            self._everyone.add(connection)
        return connection

    def give_back(self, connection: redis.Connection) -> None:
        """Return a dedicated connection for others to use."""
        if self.link.closed:
            connection.disconnect()
        else:
            self._idle.append(connection)

    @contextlib.contextmanager
    def lend(self) -> Iterator[redis.Connection]:
        if self.link.closed:
            raise Closed("the redis connection is closed")
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._make()
            with self._lock:
                self._everyone.add(connection)
        try:
            yield connection  # redis-py disconnects it itself if a reply was cut off half-way
        finally:
            if self.link.closed:
                connection.disconnect()
            else:
                self._idle.append(connection)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script, reconnecting for up to `retry_timeout` seconds if the link is lost."""
        return self.retrying(lambda connection: run_script_on(connection, script, keys, args))

    def retrying(self, operation: Callable[[redis.Connection], T]) -> T:
        """Call `operation` with a connection; while the link is lost, again with a fresh one
        (for at most `retry_timeout` seconds), then raise the last error."""
        failing_since: float | None = None
        pause = 0.05
        while True:
            try:
                with self.lend() as connection:
                    return operation(connection)
            except RETRYABLE as err:
                if not is_retryable(err) or self.link.closed:
                    raise
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since >= self._retry_timeout:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def close(self) -> None:
        """Disconnect every connection, also those lent out (their calls fail at once)."""
        self.link.closed = True
        with self._lock:
            everyone = list(self._everyone)
        for connection in everyone:
            connection.disconnect()


def readable(connection: redis.Connection) -> bool:
    """Whether reading `connection` would not block: the server closed it or sent something
    nobody asked for. For a connection whose answers have all been read; cheaper than
    redis-py's `can_read(0)`, which raises and catches a timeout when there is nothing."""
    sock = connection._sock  # type: ignore[attr-defined]
    if sock is None:
        return False  # not connected: the next command connects it
    if getattr(sock, "pending", lambda: 0)():
        return True  # TLS: decrypted bytes already buffered
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def pipeline_on(connection: redis.Connection, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Send `commands` in one write and read every reply; an error reply is returned in its
    place (as the exception), not raised."""
    connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as err:
            replies.append(err)
    return replies


def load_scripts(connection: redis.Connection) -> None:
    """Load every script into the server's script cache (at connect, and after a restart)."""
    for reply in pipeline_on(connection, [("SCRIPT", "LOAD", s.source) for s in scripts.ALL]):
        if isinstance(reply, Exception):
            raise reply


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class ScriptCall:
    """EVALSHA of one script with fixed keys, packed once: each call only encodes its
    arguments (redis-py's generic packing costs more than the round trip saves)."""

    def __init__(self, script: Script, keys: Sequence[str]) -> None:
        self.script = script
        self.keys = list(keys)
        head = [b"EVALSHA", script.sha.encode(), b"%d" % len(keys), *map(_encode, keys)]
        self._head_count = len(head)
        self._head = b"".join(map(_bulk, head))

    @property
    def name(self) -> str:
        return self.script.name

    def pack(self, args: Sequence[Any]) -> list[bytes]:
        pieces = [b"*%d\r\n" % (self._head_count + len(args)), self._head]
        for arg in args:
            data = _encode(arg)
            pieces += (b"$%d\r\n" % len(data), data, b"\r\n")
        return [b"".join(pieces)]

    def run(self, connection: redis.Connection, args: Sequence[Any]) -> Any:
        """EVALSHA on `connection`; EVAL (which caches it again) if the server forgot it."""
        connection.send_packed_command(self.pack(args))
        try:
            return connection.read_response()
        except NoScriptError:
            connection.send_command("EVAL", self.script.source, len(self.keys), *self.keys, *args)
            return connection.read_response()


class Command:
    """A plain command with its first words fixed (`RPUSH <key>`), packed and run like a
    ScriptCall, so that pipelines sent without waiting can mix both."""

    def __init__(self, *head: Any) -> None:
        self.name = _encode(head[0]).decode().lower()
        self._head = [_encode(word) for word in head]

    def pack(self, args: Sequence[Any]) -> list[bytes]:
        words = [*self._head, *map(_encode, args)]
        return [b"*%d\r\n" % len(words) + b"".join(map(_bulk, words))]

    def run(self, connection: redis.Connection, args: Sequence[Any]) -> Any:
        connection.send_packed_command(self.pack(args))
        return connection.read_response()


def run_script_on(
    connection: redis.Connection, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """EVALSHA on `connection`; EVAL (which caches it again) if the server forgot the script."""
    connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    try:
        return connection.read_response()
    except NoScriptError:
        connection.send_command("EVAL", script.source, len(keys), *keys, *args)
        return connection.read_response()
