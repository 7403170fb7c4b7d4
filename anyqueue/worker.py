"""Background workers: run a handler on threads, ack on return, retry with backoff, dead-letter."""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import Error

if TYPE_CHECKING:
    from types import TracebackType

    from .capabilities import Capabilities
    from .message import Message
    from .subscription import Subscription

log = logging.getLogger("anyqueue")
Handler = Callable[["Message"], Any]


def backoff_delay(delivery_count: int, base: float, ceiling: float) -> float:
    """Exponential backoff with up to 25% jitter: base, 2*base, 4*base ... capped at ceiling."""
    delay: float = min(ceiling, base * 2.0 ** max(0, delivery_count - 1))
    return delay * (1 + random.random() / 4)


class Worker:
    """Handler threads on one subscription. `stop()` waits for in-flight handlers; messages not
    yet handled go back to their group."""

    def __init__(
        self,
        subscription: Subscription,
        handler: Handler,
        *,
        concurrency: int,
        max_deliveries: int | None,
        retry_delay: float,
        max_retry_delay: float,
        capabilities: Capabilities,
    ) -> None:
        self.subscription = subscription
        self._handler = handler
        self._max_deliveries = max_deliveries
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._capabilities = capabilities
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._in_flight: set[Message] = set()
        self._in_flight_lock = threading.Lock()
        name = f"anyqueue-{subscription.topic}"
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(concurrency)
        ]
        lease = subscription._driver.lease_seconds
        if lease and subscription.ack_timeout is None:
            # the backend takes messages back after `lease` seconds: keep extending the
            # leases of messages whose handlers are still running, so none is handled twice
            self._threads.append(
                threading.Thread(
                    target=self._keep_leases, args=(lease,), name=f"{name}-leases", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        subscription = self.subscription
        while not self._stopped.is_set():
            try:
                message = subscription.receive()
            except Error as err:
                if self._stopped.is_set() or subscription.closed:
                    return
                log.warning("anyqueue: receive on %r failed: %s; retrying", subscription, err)
                self._stopped.wait(1.0)
                continue
            if message is not None:
                self._process(message)

    def _process(self, message: Message) -> None:
        with self._in_flight_lock:
            self._in_flight.add(message)
        try:
            self._handler(message)
        except Exception as err:
            if message._settled:
                log.exception("anyqueue: handler failed on %r (already settled)", message)
                return
            self._failed(message, err)
        else:
            self._settle(message.ack)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(message)

    def _keep_leases(self, lease: float) -> None:
        interval = max(0.05, lease / 3)
        while not self._stopped.wait(interval) or self._in_flight:
            with self._in_flight_lock:
                running = [m for m in self._in_flight if not m._settled]
            if not running:
                if self._stopped.is_set():
                    return
                continue
            try:
                self.subscription._extend_all(running, lease)
            except Error as err:
                log.warning("anyqueue: could not extend leases: %s", err)

    def _failed(self, message: Message, err: Exception) -> None:
        exhausted = self._max_deliveries is not None and (
            message.delivery_count >= self._max_deliveries
        )
        if exhausted or not self._capabilities.nack:
            log.error(
                "anyqueue: handler failed on %r (delivery %d), dead-lettering: %s: %s",
                message,
                message.delivery_count,
                type(err).__name__,
                err,
            )
            self._settle(lambda: self.subscription._settle_dead(message, err))
            return
        delay = None
        if self._capabilities.delay and self._retry_delay > 0:
            delay = backoff_delay(message.delivery_count, self._retry_delay, self._max_retry_delay)
            if self._capabilities.max_delay_seconds is not None:
                delay = min(delay, self._capabilities.max_delay_seconds)
        log.warning(
            "anyqueue: handler failed on %r (delivery %d), retrying in %ss: %s: %s",
            message,
            message.delivery_count,
            f"{delay:.2f}" if delay else "0",
            type(err).__name__,
            err,
        )
        self._settle(lambda: message.nack(requeue=True, delay=delay))

    def _settle(self, settle: Callable[[], None]) -> None:
        try:
            settle()
        except Error as err:
            # the message stays unsettled and comes back to the group: nothing is lost
            log.warning("anyqueue: could not settle a message: %s", err)

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, wait for running handlers, return the rest to the group."""
        with self._stop_lock:
            self._stopped.set()
            self.subscription._drain()
            # every message handed out is being handled: wait until all are settled, then
            # close, which also wakes a thread still blocked in the backend's receive
            if threading.current_thread() not in self._threads:
                self.subscription._wait_settled(timeout)
            self.subscription.close()
            current = threading.current_thread()
            for thread in self._threads:
                if thread is not current:
                    thread.join(timeout)

    def run(self) -> None:
        """Block until SIGINT or SIGTERM (or `stop()` from another thread), then stop."""
        if threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, lambda *_: self._stopped.set())
                for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                while not self._stopped.wait(0.2):
                    pass
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        else:
            self._stopped.wait()
        self.stop()

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Worker {self.subscription.topic!r} group={self.subscription.group!r} {state}>"
