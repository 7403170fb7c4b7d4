"""Live cut-over: move a group to another broker while producers keep publishing.

    python examples/migration.py [URL [NEW_URL]]
    # URL, the old broker: argv[1], else $ANYQUEUE_URL, else memory://
    # NEW_URL, the new broker: argv[2], else a memory:// namespace of its own

Orders wait in group "billing" on the old broker. The new broker gets the group and its
consumers; a shovel (`migrate(..., follow=True)`, the library side of `anyqueue migrate
--follow`) forwards whatever reaches the old group; the producers send a few more orders to the
old broker, then switch to the new one. The consumers drop repeats by message id (migration is
at least once; ids, keys and headers are kept). Once every order has arrived, the shovel is
stopped. Exits non-zero if an order was lost, handled twice, or arrived altered.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import anyqueue
from anyqueue.migrate import MIGRATED_FROM, MigrationReport, migrate

BACKLOG = 30  # orders waiting on the old broker before the cut-over starts
STRAGGLERS = 10  # sent to the old broker by producers not yet switched
AFTER_SWITCH = 20  # sent to the new broker once the producers switched
DEADLINE_SECONDS = 60.0


class Consumers:
    """The new broker's billing consumers: they handle each order id once and drop repeats."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handled: dict[str, anyqueue.Message] = {}  # message id -> the message handled
        self.repeats = 0
        self.altered: list[str] = []

    def handle(self, message: anyqueue.Message) -> None:
        with self.lock:
            if message.id in self.handled:
                self.repeats += 1  # a repeat of an order already handled: ack, do nothing
                return
            self.handled[message.id] = message
        order = message.json()
        if message.key != order["customer"] or message.headers.get("order") != str(order["n"]):
            with self.lock:
                self.altered.append(f"order {order['n']}: key {message.key!r}, {message.headers}")

    def count(self) -> int:
        with self.lock:
            return len(self.handled)


def publish_orders(broker: anyqueue.Broker, topic: str, numbers: range) -> dict[str, int]:
    """Publish orders `numbers`; return their message ids → order numbers."""
    ids = {}
    for n in numbers:
        order = {"n": n, "customer": f"customer-{n % 4}", "total": 10 + n}
        message_id = broker.publish(topic, order, key=order["customer"], headers={"order": str(n)})
        ids[message_id] = n
    return ids


def main(old_url: str | None, new_url: str | None) -> int:
    topic, group = f"orders-{uuid.uuid4().hex[:8]}", "billing"
    new_url = new_url or f"memory://cut-over-{uuid.uuid4().hex[:8]}"
    consumers = Consumers()
    stop = threading.Event()
    shovel_report: list[MigrationReport] = []
    problems: list[str] = []

    with (
        anyqueue.connect(old_url) as old,
        anyqueue.connect(new_url) as new,
        tempfile.TemporaryDirectory() as state,
    ):
        print(f"connected to {old.url} ({old.backend}), the old broker")
        print(f"connected to {new.url} ({new.backend}), the new broker")

        old.declare(topic, group)
        sent = publish_orders(old, topic, range(BACKLOG))
        print(f'1. {BACKLOG} orders wait on the old broker in group "{group}"')

        # the group exists on the new broker before anything moves, with its consumers
        new.declare(topic, group)
        workers = [new.consume(topic, consumers.handle, group=group) for _ in range(2)]
        print(f'2. group "{group}" and 2 consumers on the new broker')

        def shovel() -> None:
            report = migrate(
                old,
                new,
                topic=topic,
                group=group,
                follow=True,  # until stopped: forwards what still reaches the old broker
                dedupe=True,  # never publishes an id twice in this run
                state_path=Path(state) / "journal.json",
                batch_size=20,
                stop=stop,
            )
            shovel_report.append(report)

        forwarding = threading.Thread(target=shovel, name="shovel")
        forwarding.start()
        print("3. shovel started: migrate(old, new, follow=True)")

        sent |= publish_orders(old, topic, range(BACKLOG, BACKLOG + STRAGGLERS))
        print(f"4. {STRAGGLERS} more orders from producers still on the old broker")
        total = BACKLOG + STRAGGLERS + AFTER_SWITCH
        sent |= publish_orders(new, topic, range(BACKLOG + STRAGGLERS, total))
        print(f"   producers switched: {AFTER_SWITCH} orders straight to the new broker")

        deadline = time.monotonic() + DEADLINE_SECONDS
        while consumers.count() < total and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()  # the shovel finishes its batch in flight, acks it and returns
        forwarding.join(DEADLINE_SECONDS)
        for worker in workers:
            worker.stop()

    handled = consumers.handled
    forwarded = sum(MIGRATED_FROM in message.headers for message in handled.values())
    print(
        f"5. consumers on the new broker handled {len(handled)} of {total} orders: "
        f"{forwarded} forwarded by the shovel, {len(handled) - forwarded} published there; "
        f"{consumers.repeats} repeats dropped by id"
    )
    if shovel_report:
        print(f"   shovel: {shovel_report[0].summary()}")
    else:
        problems.append("the shovel did not stop")
    if shovel_report and not shovel_report[0].ok:
        problems.append(f"the shovel failed: {shovel_report[0].error}")
    missing = sorted(sent[i] for i in set(sent) - set(handled))
    if missing:
        problems.append(f"orders never handled: {missing}")
    if set(handled) - set(sent):
        problems.append(f"unexpected messages: {sorted(set(handled) - set(sent))}")
    if forwarded != BACKLOG + STRAGGLERS:
        problems.append(f"{forwarded} orders came through the shovel, not {BACKLOG + STRAGGLERS}")
    problems += consumers.altered
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("Cut-over complete: every order arrived exactly once.")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sys.exit(main(arguments[0] if arguments else None, arguments[1] if arguments[1:] else None))
