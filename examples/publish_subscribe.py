"""Publish/subscribe: every subscriber gets every message (RabbitMQ tutorial 3).

    python examples/publish_subscribe.py [URL]   # URL: argv[1], else $ANYQUEUE_URL, else memory://

A log emitter publishes to one topic. Two ephemeral subscriptions (no group: private to their
subscriber, like RabbitMQ's exclusive queues) see what is published while they are open, and a
durable group keeps its copy even for a consumer that comes later. Each of the three gets every
message: fan-out is one group per interested party. Exits non-zero if any copy is missing.
"""

from __future__ import annotations

import sys
import time
import uuid

import anyqueue

LOG_LINES = [f"info: user {n} logged in" for n in range(1, 6)]


def drain(subscription: anyqueue.Subscription, expected: int, seconds: float) -> list[str]:
    """Receive until `expected` messages arrived or `seconds` passed."""
    received: list[str] = []
    deadline = time.monotonic() + seconds
    while len(received) < expected:
        message = subscription.receive(timeout=max(0.0, deadline - time.monotonic()))
        if message is None:
            break
        received.append(message.text)
        message.ack()
    return received


def main(url: str | None) -> int:
    topic = f"logs-{uuid.uuid4().hex[:8]}"
    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")
        broker.declare(topic, group="archive")  # durable: kept until someone consumes it
        screen = broker.subscribe(topic)  # ephemeral: sees only what is published from now on
        alerts = broker.subscribe(topic)
        for line in LOG_LINES:
            broker.publish(topic, line)
            print(f" [x] Sent {line!r}")

        results = {
            "screen (ephemeral)": drain(screen, len(LOG_LINES), 10),
            "alerts (ephemeral)": drain(alerts, len(LOG_LINES), 10),
        }
        screen.close()  # an ephemeral group disappears with its subscription
        alerts.close()
        with broker.subscribe(topic, group="archive") as archive:  # a consumer that comes later
            results["archive (group)"] = drain(archive, len(LOG_LINES), 10)

    failed = False
    for name, received in results.items():
        print(f" [{name}] received {len(received)} of {len(LOG_LINES)} log lines")
        if sorted(received) != sorted(LOG_LINES):
            print(f"FAILED: {name} did not get every message", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
