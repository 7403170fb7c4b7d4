"""A tour of anyqueue: work queue, fan-out, topic routing and RPC, in one run.

    python examples/tour.py [URL]           # URL: argv[1], else $ANYQUEUE_URL, else memory://

On the embedded default (memory://) it needs no server. The same code runs unchanged on
RabbitMQ, Redis, SQS or Kafka: only the URL changes. Exits non-zero if any step does not do
what it shows.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import Counter

import anyqueue

_print_lock = threading.Lock()


def say(line: str = "") -> None:
    """print() from several threads without mixing their lines."""
    with _print_lock:
        print(line, flush=True)


def wait_for(done: threading.Event, what: str, problems: list[str], seconds: float = 20) -> None:
    if not done.wait(seconds):
        problems.append(f"{what} did not finish within {seconds:g}s")


# -- 1. work queue -------------------------------------------------------------------------------
def work_queue(broker: anyqueue.Broker, prefix: str) -> list[str]:
    say('1. Work queue: 3 workers in group "resizers" share 6 tasks, one at a time (prefetch=1)')
    topic = f"{prefix}.resize"
    photos = [f"photo-{n}.jpg" for n in range(1, 7)]
    done: dict[str, tuple[str, int]] = {}  # photo -> (worker, delivery count)
    handled: list[str] = []
    lock = threading.Lock()
    all_done = threading.Event()

    def worker(name: str) -> anyqueue.Worker:
        def resize(message: anyqueue.Message) -> None:
            photo = message.text
            if photo == "photo-4.jpg" and message.delivery_count == 1:
                say(f"   {name}: {photo} failed (delivery 1) - raising, so it is retried")
                raise OSError("disk hiccup")
            time.sleep(0.05)  # the "work"
            with lock:
                handled.append(photo)
                done[photo] = (name, message.delivery_count)
                if len(done) == len(photos):
                    all_done.set()
            say(f"   {name}: resized {photo} (delivery {message.delivery_count})")

        # a handler that returns acks its message; one that raises gets it again after a backoff
        return broker.consume(topic, resize, group="resizers", prefetch=1, retry_delay=0.1)

    broker.declare(topic, group="resizers")
    workers = [worker(f"worker-{n}") for n in (1, 2, 3)]
    broker.publish_batch(topic, photos)
    problems: list[str] = []
    wait_for(all_done, "the work queue", problems)
    for running in workers:
        running.stop()
    share = Counter(name for name, _ in done.values())
    say(f"   -> {len(done)} of {len(photos)} done; per worker: {dict(sorted(share.items()))}")
    if sorted(handled) != sorted(photos):
        problems.append(f"each task should be done exactly once, got {sorted(handled)}")
    if done.get("photo-4.jpg", ("", 0))[1] != 2:
        problems.append("photo-4.jpg should have succeeded on its second delivery")
    return problems


# -- 2. fan-out ----------------------------------------------------------------------------------
def fan_out(broker: anyqueue.Broker, prefix: str) -> list[str]:
    say('2. Fan-out: groups "billing" and "shipping" each get every order')
    topic = f"{prefix}.orders"
    orders = [{"order": n, "total": 10 * n} for n in (1, 2, 3)]
    received: dict[str, list[int]] = {"billing": [], "shipping": []}
    lock = threading.Lock()
    all_done = threading.Event()

    def member_of(group: str) -> anyqueue.Worker:
        def handle(message: anyqueue.Message) -> None:
            order = message.json()
            with lock:
                received[group].append(order["order"])
                if sum(map(len, received.values())) == 2 * len(orders):
                    all_done.set()

        return broker.consume(topic, handle, group=group)

    workers = [member_of("billing"), member_of("shipping")]
    for order in orders:
        broker.publish(topic, order)  # a dict is sent as JSON
    problems: list[str] = []
    wait_for(all_done, "fan-out", problems)
    for running in workers:
        running.stop()
    for group, numbers in received.items():
        say(f"   {group:<8} got orders {sorted(numbers)}")
        if sorted(numbers) != [1, 2, 3]:
            problems.append(f"{group} should get orders [1, 2, 3], got {sorted(numbers)}")
    return problems


# -- 3. topic routing ----------------------------------------------------------------------------
def topic_routing(broker: anyqueue.Broker, prefix: str) -> list[str]:
    say("3. Topic routing: '*' matches one word, '#' any number of words")
    topics = ["logs.eu.error", "logs.us.error", "logs.eu.info", "logs.eu.db.slow", "audit.eu"]
    wanted = {
        "logs.*.error": ["logs.eu.error", "logs.us.error"],
        "logs.eu.#": ["logs.eu.error", "logs.eu.info", "logs.eu.db.slow"],
    }
    try:
        subscriptions = {pattern: broker.subscribe(f"{prefix}.{pattern}") for pattern in wanted}
    except anyqueue.NotSupported as err:
        say(f"   skipped: {err}")
        return []
    for name in topics:
        broker.publish(f"{prefix}.{name}", name)
    problems: list[str] = []
    for pattern, subscription in subscriptions.items():
        got: list[str] = []
        deadline = time.monotonic() + 10
        while len(got) <= len(wanted[pattern]):
            complete = len(got) == len(wanted[pattern])
            wait = 0.2 if complete else max(0.0, deadline - time.monotonic())
            message = subscription.receive(timeout=wait)  # once complete: any unwanted extra?
            if message is None:
                break
            got.append(message.text)
            message.ack()
        subscription.close()
        say(f"   {pattern!r:<15} got {', '.join(got)}")
        if sorted(got) != sorted(wanted[pattern]):
            problems.append(f"{pattern!r} should get {wanted[pattern]}, got {got}")
    return problems


# -- 4. RPC --------------------------------------------------------------------------------------
PRICES = {"apple": 0.5, "pear": 0.75}


def quote(message: anyqueue.Message) -> dict[str, object]:
    item = message.text
    return {"item": item, "price": PRICES[item]}  # KeyError for an unknown item


def rpc(broker: anyqueue.Broker, prefix: str) -> list[str]:
    say("4. RPC: request/reply, and the server's exceptions come back to the caller")
    topic = f"{prefix}.prices"
    problems: list[str] = []
    with broker.serve(topic, quote):
        reply = broker.request(topic, "apple", timeout=10)
        say(f"   quote('apple')  -> {reply.json()}")
        if reply.json() != {"item": "apple", "price": 0.5}:
            problems.append(f"quote('apple') returned {reply.text}")
        try:
            broker.request(topic, "durian", timeout=10)
            problems.append("quote('durian') should raise RemoteError")
        except anyqueue.RemoteError as err:
            say(f"   quote('durian') -> RemoteError({err})")
    return problems


def main(url: str | None) -> int:
    logging.getLogger("anyqueue").setLevel(logging.ERROR)  # the tour prints its own story
    prefix = f"tour-{uuid.uuid4().hex[:8]}"  # fresh names per run on a real broker
    problems: list[str] = []
    with anyqueue.connect(url) as broker:
        say(f"anyqueue tour on {broker.url} (backend: {broker.backend})")
        say(f"(topic names below are prefixed with {prefix!r})")
        for step in (work_queue, fan_out, topic_routing, rpc):
            say()
            found = step(broker, prefix)
            say("   ok" if not found else "   FAILED")
            problems += found
    say()
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}", file=sys.stderr)
        return 1
    say("Every step did what it showed.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
