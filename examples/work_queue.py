"""Work queue: workers in one group share the tasks, fair dispatch with prefetch=1 (RabbitMQ
tutorial 2).

    python examples/work_queue.py [URL]     # URL: argv[1], else $ANYQUEUE_URL, else memory://

Each dot in a task is 0.1 s of work, and the first task is heavy. With `prefetch=1` a busy worker
holds only the task it is working on, so nothing waits queued behind it: the light tasks go to
the free workers and are all done while the heavy one still runs. A handler that returns acks its
message; one that raises would get it again later. Exits non-zero if a task was lost, done twice,
or a light task had to wait for the heavy one.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter

import anyqueue

SECONDS_PER_DOT = 0.1
WORKERS = 3
TASKS = ["heavy task " + "." * 15, *(f"light task {n} ." for n in range(1, 9))]
_print_lock = threading.Lock()


def say(line: str) -> None:
    """print() from several threads without mixing their lines."""
    with _print_lock:
        print(line, flush=True)


def main(url: str | None) -> int:
    topic = f"tasks-{uuid.uuid4().hex[:8]}"
    finished: list[tuple[str, str, str]] = []  # (worker, message id, task) in finishing order
    lock = threading.Lock()
    all_done = threading.Event()

    def worker(name: str) -> anyqueue.Worker:
        def handle(message: anyqueue.Message) -> None:
            task = message.text
            say(f" [{name}] received {task!r}")
            time.sleep(task.count(".") * SECONDS_PER_DOT)  # the "work"
            with lock:
                finished.append((name, message.id, task))
                if len(finished) >= len(TASKS):
                    all_done.set()
            say(f" [{name}] done with {task!r}")

        # every worker is a member of the group "workers": each task goes to one of them
        return broker.consume(topic, handle, group="workers", prefetch=1)

    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")
        # with per-key ordering (Kafka partitions) one member works through a partition in
        # order, so a light task behind the heavy one in its partition waits: no fair dispatch
        fair_dispatch = broker.capabilities.ordering != "per_key"
        broker.declare(topic, group="workers")
        sent = {}
        for task in TASKS:
            sent[broker.publish(topic, task)] = task
            say(f" [x] Sent {task!r}")
        # the workers start with all tasks waiting: with a larger prefetch the first one would
        # grab several and sit on them while busy with the heavy task
        workers = [worker(f"worker-{n}") for n in range(1, WORKERS + 1)]
        all_done.wait(timeout=30)
        for running in workers:
            running.stop()  # waits for handlers in progress

    problems = []
    done_ids = [message_id for _, message_id, _ in finished]
    if sorted(done_ids) != sorted(sent):
        problems.append(f"{len(sent)} tasks sent, {len(done_ids)} done: {sorted(done_ids)}")
    tasks_in_order = [task for _, _, task in finished]
    if fair_dispatch and tasks_in_order and tasks_in_order[-1] != TASKS[0]:
        problems.append(f"a light task waited for the heavy one: finishing order {tasks_in_order}")
    share = Counter(name for name, _, _ in finished)
    print("tasks per worker:", ", ".join(f"{name} {n}" for name, n in sorted(share.items())))
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
