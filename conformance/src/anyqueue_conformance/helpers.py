"""Small tools the conformance cases share: unique names, draining, polling, outcomes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import anyqueue

from .harness import Harness, Unverifiable


class Names:
    """Unique names for one test, so runs and tests never see each other's messages."""

    def __init__(self) -> None:
        self.prefix = "cf" + uuid.uuid4().hex[:10]

    def __call__(self, name: str = "t") -> str:
        return f"{self.prefix}.{name}"


def unclaimed(capability: str) -> None:
    """End the test as UNCLAIMED (the backend does not claim it; nothing was verified)."""
    pytest.skip(f"UNCLAIMED: the backend does not claim {capability}")


def unverifiable(reason: object) -> None:
    """End the test as UNVERIFIABLE (the harness lacks a hook the test needs)."""
    pytest.skip(f"UNVERIFIABLE: {reason}")


def restart(harness: Harness) -> None:
    try:
        harness.restart()
    except Unverifiable as err:
        unverifiable(err)


def drop_connection(harness: Harness, broker: anyqueue.Broker) -> None:
    try:
        harness.drop_connection(broker)
    except Unverifiable as err:
        unverifiable(err)


def drain(
    subscription: anyqueue.Subscription,
    count: int,
    timeout: float,
    *,
    ack: bool = True,
    idle: float | None = None,
) -> list[anyqueue.Message]:
    """Receive until `count` messages arrived or `timeout` passed (or nothing came for `idle`
    seconds), acking each unless told not to."""
    received: list[anyqueue.Message] = []
    deadline = time.monotonic() + timeout
    while len(received) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        message = subscription.receive(timeout=min(remaining, idle) if idle else remaining)
        if message is None:
            if idle:
                break
            continue
        received.append(message)
        if ack:
            message.ack()
    return received


def assert_nothing_more(subscription: anyqueue.Subscription, wait: float) -> None:
    """Nothing else arrives within `wait` seconds."""
    extra = subscription.receive(timeout=wait)
    assert extra is None, f"unexpected extra message {extra!r}"


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll `condition` until true, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.01)


def run_threads(targets: list[Callable[[], None]], timeout: float) -> None:
    """Run callables on threads; re-raise the first failure; fail if any outlives `timeout`."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as err:
                errors.append(err)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout:.0f}s"
