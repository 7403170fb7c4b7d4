"""One AMQP connection owned by one I/O thread, with reconnects and calls from any thread.

pika is not thread-safe, and a BlockingConnection stops answering heartbeats while a handler runs
(pika#1104, pika#1237). So each `Link` runs pika's SelectConnection ioloop on its own thread:
that thread alone touches pika objects, heartbeats flow whatever user threads do, and every call
from another thread is marshalled onto it, in order (`post`, or `Channel.call` to wait for the
broker's answer).

When the connection drops the thread reconnects with exponential backoff. Each successful open
starts a new *generation*: channels, consumers and delivery tags of an older generation are dead,
their pending calls fail, and settlements aimed at them are discarded (never sent on the new one).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from anyqueue.errors import ConfigError, ConnectionError, Error

log = logging.getLogger("anyqueue.rabbitmq")

#: first and longest pause between reconnect attempts (doubling in between)
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


class Future:
    """The result of something the I/O thread does for a waiting caller."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def resolve(self, value: Any = None) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def reject(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float, what: str) -> Any:
        """The value, or the error raised; ConnectionError when nothing came in `timeout`."""
        if not self._done.wait(timeout):
            raise ConnectionError(f"no answer from RabbitMQ within {timeout:g}s to {what}")
        if self._error is not None:
            raise translate(self._error, what) from self._error
        return self._value


def translate(reason: BaseException, what: str) -> Error:
    """An anyqueue error (a fresh instance per caller) for why a channel or connection ended."""
    if isinstance(reason, Error):
        return type(reason)(str(reason))
    if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
        text = f"RabbitMQ refused {what}: {reason.reply_code} {reason.reply_text}"
        if reason.reply_code == 406 and "inequivalent arg" in reason.reply_text:
            return ConfigError(
                text + " (the queue or exchange exists with other settings, e.g. another "
                "queue_type: delete it or connect with matching options)"
            )
        return Error(text)
    return ConnectionError(f"connection to RabbitMQ lost during {what}: {describe(reason)}")


def describe(reason: BaseException | None) -> str:
    """A short text for a pika error (its str() is often empty)."""
    if reason is None:
        return "unknown reason"
    text = str(reason) or repr(reason)
    return f"{type(reason).__name__}: {text}" if type(reason).__name__ not in text else text


class Link:
    """One AMQP connection and the I/O thread that owns it.

    `reconnect_timeout`: how long callers wait for a dropped connection to come back before
    they get ConnectionError (the thread keeps trying in the background until `close()`).
    """

    def __init__(
        self, parameters: pika.ConnectionParameters, *, name: str, reconnect_timeout: float
    ) -> None:
        self._parameters = parameters
        self.name = name
        self._reconnect_timeout = reconnect_timeout
        self._lock = threading.Lock()
        self._state_changed = threading.Condition(self._lock)
        self._ops: deque[Callable[[], None]] = deque()
        self._wakeup_scheduled = False
        self._ioloop: IOLoop | None = None
        self._connection: pika.SelectConnection | None = None  # I/O thread only
        self._open = False
        self._closing = False
        self._stopped = threading.Event()
        self.generation = 0
        self._down_since = time.monotonic()
        self._last_error: BaseException | None = None
        self._failed_attempts = 0
        self._on_open: list[Callable[[int], None]] = []
        self._on_lost: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name=f"anyqueue-amqp-{name}", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, attempts: int, timeout: float, where: str) -> None:
        """Start the I/O thread and wait for the first connection; ConnectionError after
        `attempts` failed attempts or `timeout` seconds."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._open:
                remaining = deadline - time.monotonic()
                if self._failed_attempts >= attempts or remaining <= 0:
                    error = self._last_error
                    break
                self._state_changed.wait(remaining)
            else:
                return
        self.close()
        reason = describe(error) if error else f"no connection within {timeout:g}s"
        raise ConnectionError(
            f"cannot connect to RabbitMQ at {where} after {attempts} attempt(s): {reason}"
        ) from error

    def on_open(self, listener: Callable[[int], None]) -> None:
        """Call `listener(generation)` on the I/O thread after every (re)connect."""
        self._on_open.append(listener)

    def on_lost(self, listener: Callable[[], None]) -> None:
        """Call `listener()` on the I/O thread when the connection drops."""
        self._on_lost.append(listener)

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection politely and stop the I/O thread. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            ioloop = self._ioloop
            self._state_changed.notify_all()
        self._stopped.set()
        if ioloop is not None:
            ioloop.add_callback_threadsafe(self._close_connection)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closing

    def drop(self) -> bool:
        """Test hook: cut the TCP connection under pika, as a network failure would."""
        with self._lock:
            connection = self._connection
        transport = getattr(connection, "_transport", None)
        sock = getattr(transport, "_sock", None)
        if not isinstance(sock, socket.socket):
            return False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return True

    # -- calls from other threads ----------------------------------------------------------------
    def post(self, operation: Callable[[], None]) -> None:
        """Run `operation()` on the I/O thread once the connection is open, after everything
        posted before it. An operation checks for itself that what it uses is still alive."""
        with self._lock:
            self._ops.append(operation)
            if self._wakeup_scheduled or self._ioloop is None:
                return
            self._wakeup_scheduled = True
            ioloop = self._ioloop
        ioloop.add_callback_threadsafe(self._drain)

    def wait_open(self, timeout: float) -> int:
        """Wait up to `timeout` for the connection; its generation, or 0 if still down.
        ConnectionError once it has been down longer than `reconnect_timeout`, or closed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closing:
                    raise ConnectionError("the RabbitMQ connection is closed")
                if self._open:
                    return self.generation
                now = time.monotonic()
                give_up = self._down_since + self._reconnect_timeout
                if now >= give_up:
                    raise ConnectionError(
                        f"RabbitMQ unreachable for {now - self._down_since:.0f}s (still "
                        f"retrying in the background): {describe(self._last_error)}"
                    )
                remaining = min(deadline, give_up) - now
                if remaining <= 0:
                    return 0
                self._state_changed.wait(remaining)

    def require_open(self, timeout: float) -> int:
        """Like `wait_open`, but ConnectionError instead of 0 when not back in `timeout`."""
        generation = self.wait_open(timeout)
        if not generation:
            raise ConnectionError(
                f"RabbitMQ connection not back within {timeout:g}s: {describe(self._last_error)}"
            )
        return generation

    def open_channel(self, timeout: float) -> Channel:
        """A new channel on the current connection (waiting for it to be up)."""
        generation = self.require_open(timeout)
        channel = Channel(self, generation)
        future = Future()

        def open_it() -> None:
            connection = self._connection
            if self.generation != generation or connection is None or not connection.is_open:
                future.reject(ConnectionError("the connection dropped before a channel opened"))
                return

            def opened(pika_channel: pika.channel.Channel) -> None:
                channel.pika = pika_channel
                future.resolve(channel)

            try:
                pika_channel = connection.channel(on_open_callback=opened)
            except Exception as err:  # the connection is closing under us
                future.reject(err)
                return
            pika_channel.add_on_close_callback(channel._closed_by_pika)

        self.post(open_it)
        result: Channel = future.result(timeout, "opening a channel")
        return result

    # -- timers (I/O thread only) --------------------------------------------------------------
    def call_later(self, seconds: float, callback: Callable[[], None]) -> Any:
        """Run `callback` on the I/O thread in `seconds` (a timer of this connection: it dies
        with it). Call only from the I/O thread; returns a handle for `cancel_timer`."""
        assert self._connection is not None
        return self._connection.ioloop.call_later(seconds, callback)

    def cancel_timer(self, handle: Any) -> None:
        """Cancel a `call_later` timer (I/O thread only; a timer of a dead connection is gone)."""
        connection = self._connection
        if connection is not None:
            connection.ioloop.remove_timeout(handle)

    # -- the I/O thread ------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._closing:
            ioloop = IOLoop()
            opened_before = self.generation
            try:
                connection = pika.SelectConnection(
                    self._parameters,
                    on_open_callback=self._opened,
                    on_open_error_callback=self._open_failed,
                    on_close_callback=self._closed,
                    custom_ioloop=ioloop,
                )
            except Exception as err:  # bad parameters: nothing to retry
                with self._lock:
                    self._last_error = err
                    self._failed_attempts += 1
                    self._state_changed.notify_all()
                ioloop.close()
                return
            with self._lock:
                self._ioloop = ioloop
                self._connection = connection
                self._wakeup_scheduled = False
            try:
                ioloop.start()
            finally:
                with self._lock:
                    self._ioloop = None
                    self._connection = None
                    self._open = False
                ioloop.close()
            if self.generation != opened_before:
                backoff = FIRST_BACKOFF  # it was up: retry soon
            if self._stopped.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
        with self._lock:
            self._state_changed.notify_all()

    def _opened(self, connection: pika.SelectConnection) -> None:
        with self._lock:
            self.generation += 1
            generation = self.generation
            self._open = True
            self._failed_attempts = 0
            self._state_changed.notify_all()
        if generation > 1:
            log.info("anyqueue: reconnected to RabbitMQ (%s)", self.name)
        for listener in self._on_open:
            self._guarded(listener, generation)
        self._drain()

    def _open_failed(self, connection: pika.SelectConnection, error: BaseException) -> None:
        with self._lock:
            self._last_error = error
            self._failed_attempts += 1
            self._state_changed.notify_all()
        log.debug("anyqueue: connecting to RabbitMQ failed: %s", describe(error))
        connection.ioloop.stop()

    def _closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        with self._lock:
            was_open = self._open
            self._open = False
            self._down_since = time.monotonic()
            self._last_error = reason
            self._state_changed.notify_all()
        if was_open and not self._closing:
            log.warning("anyqueue: RabbitMQ connection lost (%s), reconnecting", describe(reason))
        for listener in self._on_lost:
            self._guarded(listener)
        connection.ioloop.stop()

    def _close_connection(self) -> None:
        connection = self._connection
        if connection is None:
            return
        if connection.is_open:
            connection.close()
        elif not connection.is_closing:
            # still connecting: abort, which ends in _open_failed and stops the loop
            try:
                connection.close()
            except pika.exceptions.ConnectionWrongStateError:
                connection.ioloop.stop()

    def _drain(self) -> None:
        with self._lock:
            self._wakeup_scheduled = False
            if not self._open:
                return  # kept for the next connection; each op checks what it uses
            operations = list(self._ops)
            self._ops.clear()
        for operation in operations:
            self._guarded(operation)

    @staticmethod
    def _guarded(function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        except Exception:  # one failing operation must not kill the I/O thread
            log.exception("anyqueue: error on the RabbitMQ I/O thread")


class Channel:
    """A pika channel of one connection generation, usable from any thread via `call`.

    When pika reports the channel closed (by the broker, or with its connection), every call
    still waiting fails with the reason and the close listeners run (on the I/O thread).
    """

    def __init__(self, link: Link, generation: int) -> None:
        self.link = link
        self.generation = generation
        self.pika: pika.channel.Channel | None = None
        self.close_reason: BaseException | None = None
        self._waiting: set[Future] = set()  # I/O thread only
        self._close_waiters: set[Future] = set()  # I/O thread only
        self._close_listeners: list[Callable[[BaseException], None]] = []
        #: delivery tags received and not yet settled, oldest first (consumers; I/O thread only)
        self.unsettled: OrderedDict[int, None] = OrderedDict()

    @property
    def usable(self) -> bool:
        """Open, on the current connection (read on the I/O thread for a reliable answer)."""
        return (
            self.close_reason is None
            and self.pika is not None
            and self.pika.is_open
            and self.generation == self.link.generation
        )

    def on_close(self, listener: Callable[[BaseException], None]) -> None:
        """Call `listener(reason)` on the I/O thread when this channel closes."""
        self._close_listeners.append(listener)

    def call(
        self,
        invoke: Callable[[pika.channel.Channel, Callable[..., None]], Any],
        timeout: float,
        what: str,
    ) -> Any:
        """Run `invoke(pika_channel, done)` on the I/O thread and wait until pika calls `done`
        (the broker answered) or the channel closes (its reason is raised)."""
        future = Future()

        def run() -> None:
            if not self.usable:
                future.reject(self.close_reason or ConnectionError("the channel is gone"))
                return
            self._waiting.add(future)

            def done(*result: Any) -> None:
                self._waiting.discard(future)
                future.resolve(result[0] if result else None)

            assert self.pika is not None
            try:
                invoke(self.pika, done)
            except Exception as err:
                self._waiting.discard(future)
                future.reject(err)

        self.link.post(run)
        return future.result(timeout, what)

    def post(self, action: Callable[[pika.channel.Channel], None]) -> None:
        """Run `action(pika_channel)` on the I/O thread if the channel is still usable then."""

        def run() -> None:
            if self.usable:
                assert self.pika is not None
                action(self.pika)

        self.link.post(run)

    def close(self, timeout: float) -> None:
        """Close the channel (the broker requeues its unacked deliveries) and wait for it."""
        if self.close_reason is not None or self.generation != self.link.generation:
            return  # already gone with its connection: nothing to wait for
        future = Future()

        def run() -> None:
            if not self.usable:
                future.resolve()
                return
            self._close_waiters.add(future)  # resolved by _closed_by_pika
            assert self.pika is not None
            try:
                self.pika.close()
            except pika.exceptions.ChannelWrongStateError:
                future.resolve()

        self.link.post(run)
        with contextlib.suppress(Error):
            future.result(timeout, "closing a channel")

    def _closed_by_pika(self, pika_channel: pika.channel.Channel, reason: BaseException) -> None:
        self.close_reason = reason
        waiting, self._waiting = self._waiting, set()
        for future in waiting:
            future.reject(reason)
        closing, self._close_waiters = self._close_waiters, set()
        for future in closing:
            future.resolve()
        for listener in self._close_listeners:
            Link._guarded(listener, reason)
