"""RPC: a server answers requests, the caller waits for the reply (RabbitMQ tutorial 6).

    python examples/rpc.py [URL]            # URL: argv[1], else $ANYQUEUE_URL, else memory://

`serve` runs a Fibonacci server on a topic; `request` sends a body and returns the reply
Message (correlation, the reply inbox and deadlines are handled for you). A server's exception
comes back as `RemoteError`; no reply in time raises `Timeout`. Concurrent requests from many
threads never get each other's replies. Exits non-zero if anything comes back wrong.
"""

from __future__ import annotations

import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import anyqueue

_print_lock = threading.Lock()


def say(line: str) -> None:
    """print() from several threads without mixing their lines."""
    with _print_lock:
        print(line, flush=True)


def fib(n: int) -> int:
    if n < 0:
        raise ValueError(f"fib is not defined for {n}")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def on_request(message: anyqueue.Message) -> str:
    n = int(message.text)
    say(f" [server] fib({n})")
    return str(fib(n))  # the return value is the reply (bytes, str, dict/list or a Message)


def main(url: str | None) -> int:
    topic = f"rpc-fib-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []
    with anyqueue.connect(url) as broker:
        print(f"connected to {broker.url} ({broker.backend})")
        with broker.serve(topic, on_request, concurrency=2):
            print(" [x] Requesting fib(30)")
            reply = broker.request(topic, "30", timeout=10)
            print(f" [.] Got {reply.text}")
            if reply.text != "832040":
                problems.append(f"fib(30) should be 832040, got {reply.text}")

            # many callers at once: every reply reaches the call that asked for it
            with ThreadPoolExecutor(max_workers=8) as pool:
                numbers = list(range(20))
                replies = list(
                    pool.map(lambda n: broker.request(topic, str(n), timeout=10), numbers)
                )
            answers = [int(r.text) for r in replies]
            print(f" [.] fib(0..19) from 8 threads: {answers}")
            if answers != [fib(n) for n in numbers]:
                problems.append("concurrent requests got crossed replies")

            # the server's exception comes back to the caller
            try:
                broker.request(topic, "-1", timeout=10)
                problems.append("fib(-1) should have raised RemoteError")
            except anyqueue.RemoteError as err:
                print(f" [.] fib(-1) raised RemoteError: type={err.type!r} message={err.message!r}")
                if err.type != "ValueError":
                    problems.append(f"expected a ValueError from the server, got {err.type}")

        # nobody serves this topic: the request times out (and no later server will answer it)
        try:
            broker.request(f"{topic}-nobody", "1", timeout=0.5)
            problems.append("a request nobody serves should raise Timeout")
        except anyqueue.Timeout as err:
            print(f" [.] no server: Timeout ({err})")

    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
