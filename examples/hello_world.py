"""Hello world: one producer, one consumer, one message (RabbitMQ tutorial 1).

    python examples/hello_world.py [URL]    # URL: argv[1], else $ANYQUEUE_URL, else memory://

Exits non-zero if the message does not arrive intact.
"""

from __future__ import annotations

import sys
import uuid

import anyqueue


def main(url: str | None) -> int:
    # a fresh topic per run, so leftovers of an earlier run on a real broker never mix in
    topic = f"hello-{uuid.uuid4().hex[:8]}"
    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")

        # Declaring the group first keeps messages for it even while no consumer runs:
        # a message published to a topic without any group reaches nobody.
        broker.declare(topic, group="greeter")
        broker.publish(topic, "Hello World!")
        print(" [x] Sent 'Hello World!'")

        with broker.subscribe(topic, group="greeter") as subscription:
            message = subscription.receive(timeout=10)
            if message is None:
                print("FAILED: nothing arrived within 10 s", file=sys.stderr)
                return 1
            print(f" [x] Received {message.text!r} ({message.content_type})")
            message.ack()  # done: the message is gone from the group

    if message.text != "Hello World!":
        print(f"FAILED: expected 'Hello World!', got {message.text!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
