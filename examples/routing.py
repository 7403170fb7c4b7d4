"""Routing: subscribe to exactly the messages you want, by topic name (RabbitMQ tutorial 4).

    python examples/routing.py [URL]        # URL: argv[1], else $ANYQUEUE_URL, else memory://

RabbitMQ's direct exchange routes by a key; in anyqueue the routing key is simply the topic name
(`logs.error`, `logs.warning`, `logs.info`). One subscriber writes only errors to disk; another
shows every severity on screen, with one subscription per topic it wants. Exits non-zero if a
subscriber misses a message or gets one it did not ask for.
"""

from __future__ import annotations

import sys
import time
import uuid

import anyqueue

SEVERITIES = ("info", "warning", "error")
LOGS = [
    ("info", "service started"),
    ("warning", "disk 85% full"),
    ("error", "payment provider timed out"),
    ("info", "user 7 logged in"),
    ("error", "could not write invoice 42"),
]


def receive_all(subscription: anyqueue.Subscription, expected: int) -> list[str]:
    """The `expected` messages (fewer if 10 s pass), then a short look for any unwanted extra."""
    received = []
    deadline = time.monotonic() + 10
    while len(received) <= expected:
        wait = max(0.0, deadline - time.monotonic()) if len(received) < expected else 0.2
        message = subscription.receive(timeout=wait)
        if message is None:
            break
        received.append(f"{message.topic.rsplit('.', 1)[-1]}: {message.text}")
        message.ack()
    return received


def main(url: str | None) -> int:
    prefix = f"logs-{uuid.uuid4().hex[:8]}"  # fresh names per run
    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")
        # declared before publishing, so nothing is missed
        to_disk = broker.subscribe(f"{prefix}.error", group="disk")
        to_screen = [
            broker.subscribe(f"{prefix}.{severity}", group="screen") for severity in SEVERITIES
        ]
        for severity, text in LOGS:
            broker.publish(f"{prefix}.{severity}", text)
            print(f" [x] Sent {severity}: {text!r}")

        count = {severity: sum(s == severity for s, _ in LOGS) for severity in SEVERITIES}
        disk = receive_all(to_disk, count["error"])
        screen = [
            line
            for severity, subscription in zip(SEVERITIES, to_screen)
            for line in receive_all(subscription, count[severity])
        ]
        for subscription in [to_disk, *to_screen]:
            subscription.close()

    expected_disk = sorted(f"{s}: {t}" for s, t in LOGS if s == "error")
    expected_screen = sorted(f"{s}: {t}" for s, t in LOGS)
    print(f" [disk]   {sorted(disk)}")
    print(f" [screen] {len(screen)} lines, all severities")
    failed = False
    if sorted(disk) != expected_disk:
        print(f"FAILED: disk should get only {expected_disk}", file=sys.stderr)
        failed = True
    if sorted(screen) != expected_screen:
        print(f"FAILED: screen should get {expected_screen}, got {sorted(screen)}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
