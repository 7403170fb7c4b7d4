"""Topics: subscribe by pattern, `*` for one word and `#` for any number (RabbitMQ tutorial 5).

    python examples/topics.py [URL]         # URL: argv[1], else $ANYQUEUE_URL, else memory://

Animals are published to `<speed>.<colour>.<species>` topics. One subscriber wants everything
orange (`*.orange.*`); others want all rabbits (`*.*.rabbit`), everything lazy (`lazy.#`) or
simply everything (`#`). On a backend without wildcard support the example says so and exits 0;
otherwise it exits non-zero if any subscriber gets a message it did not ask for or misses one.
"""

from __future__ import annotations

import sys
import time
import uuid

import anyqueue

ANIMALS = [
    "quick.orange.rabbit",
    "lazy.orange.elephant",
    "quick.orange.fox",
    "lazy.brown.fox",
    "lazy.pink.rabbit",
    "quick.brown.fox",
    "orange",
    "quick.orange.new.rabbit",
    "lazy.orange.new.rabbit",
    "lazy",
]
# pattern -> what it must receive (everything else must not arrive)
EXPECTED = {
    "*.orange.*": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
    "*.*.rabbit": ["quick.orange.rabbit", "lazy.pink.rabbit"],
    "lazy.#": [
        "lazy.orange.elephant",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "lazy.orange.new.rabbit",
        "lazy",
    ],
    "#": ANIMALS,
}


def receive_all(subscription: anyqueue.Subscription, expected: int) -> list[str]:
    """The `expected` messages (fewer if 10 s pass), then a short look for any unwanted extra."""
    received = []
    deadline = time.monotonic() + 10
    while len(received) <= expected:
        wait = max(0.0, deadline - time.monotonic()) if len(received) < expected else 0.2
        message = subscription.receive(timeout=wait)
        if message is None:
            break
        received.append(message.text)
        message.ack()
    return received


def main(url: str | None) -> int:
    prefix = f"animals-{uuid.uuid4().hex[:8]}"  # fresh names per run: `<prefix>.quick.orange.fox`
    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")
        try:
            subscriptions = {
                pattern: broker.subscribe(f"{prefix}.{pattern}") for pattern in EXPECTED
            }
        except anyqueue.NotSupported as err:
            print(f"skipped: {err}")
            return 0
        for animal in ANIMALS:
            broker.publish(f"{prefix}.{animal}", animal)
        print(f" [x] Sent {len(ANIMALS)} animals: {', '.join(ANIMALS)}")

        failed = False
        for pattern, subscription in subscriptions.items():
            received = receive_all(subscription, len(EXPECTED[pattern]))
            subscription.close()
            print(f" [{pattern:>10}] {', '.join(received) or '(nothing)'}")
            if sorted(received) != sorted(EXPECTED[pattern]):
                print(f"FAILED: {pattern!r} should get {EXPECTED[pattern]}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
