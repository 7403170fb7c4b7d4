"""Test support for `sqs://`: the conformance Harness, and a moto SQS+SNS server to run against.

    with moto_server() as endpoint:
        url = sqs_url(endpoint)      # sqs://testing:***@us-east-1?endpoint_url=...
        broker = anyqueue.connect(url)

    with MotoSQS() as server:        # the same, shaped like the other backends' test servers
        broker = anyqueue.connect(server.url)

`moto_server` needs `moto[server]` (a test dependency, not a runtime one).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import anyqueue
from anyqueue_conformance.harness import Harness, Unverifiable

#: dummy credentials for moto, which accepts any
MOTO_KEY_ID = "testing"
MOTO_SECRET_KEY = "moto-test-secret"


class SQSHarness(Harness):
    """Failure hooks for `sqs://`.

    restart: not possible. SQS is a managed service, and moto keeps everything in memory, so
    durability across a restart is UNVERIFIABLE here (SQS itself stores messages redundantly).
    drop_connection: closes the client's HTTP connections and abandons the deliveries it holds,
    as a consumer that died would; SQS returns them when their visibility timeout runs out, so
    connect with a short `visibility_timeout` to keep that wait short.
    """

    def restart(self) -> None:
        raise Unverifiable(
            "SQS cannot be restarted from a test (a managed service; moto keeps everything in "
            "memory), so durability across a restart cannot be shown"
        )

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        hook = getattr(broker._driver, "drop_connections", None)
        if hook is None:
            raise Unverifiable(f"{broker!r} is not an sqs:// connection")
        hook()


class MotoSQS:
    """A moto SQS+SNS server for a test session, like the other backends' test servers:
    `start()`, `stop()`, a context manager; `.endpoint` is its HTTP endpoint and `.url` an
    `sqs://` URL reaching it with dummy credentials."""

    def __init__(self, *, serialize_receives: bool = True) -> None:
        self._serialize_receives = serialize_receives
        self._running: contextlib.ExitStack | None = None
        self.endpoint = ""

    @property
    def url(self) -> str:
        return sqs_url(self.endpoint)

    def start(self) -> None:
        stack = contextlib.ExitStack()
        self.endpoint = stack.enter_context(
            moto_server(serialize_receives=self._serialize_receives)
        )
        self._running = stack

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.close()

    def __enter__(self) -> MotoSQS:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def moto_server(*, quiet: bool = True, serialize_receives: bool = True) -> Iterator[str]:
    """Run moto's SQS and SNS (server mode, in a thread) on a free loopback port; yield its
    endpoint URL and stop it afterwards.

    serialize_receives: make moto's ReceiveMessage atomic, as SQS's is (see
    `_serialized_receives`); without it, concurrent receives on a FIFO queue can hand two
    messages of one message group to two consumers at once.
    """
    from moto.server import ThreadedMotoServer

    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    with _serialized_receives() if serialize_receives else contextlib.nullcontext():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@contextlib.contextmanager
def _serialized_receives() -> Iterator[None]:
    """Work around a race in moto's server mode (moto 5.x).

    moto's `SQSBackend.receive_message` reads which FIFO message groups are in flight once, at
    the start, and then scans the queue without a lock, while the threaded server runs other
    receives at the same time. Two concurrent receives can therefore both take messages of
    the same group (e.g. one takes `k:1`, the other `k:2` before `k:1` is deleted), which real
    SQS never does ("no more messages for the same message group ID are returned unless you
    delete the message or it becomes visible"). The per-key ordering case of the conformance
    suite fails on moto for that reason alone.

    Here each scan runs under one lock (moto's receive with no wait), and the long poll is a
    wait on the queue's own condition (notified when a message is added) between scans.
    """
    from moto.sqs.models import SQSBackend

    original: Callable[..., Any] = SQSBackend.receive_message
    scan_lock = threading.Lock()

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with scan_lock:
                found = original(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            added = self.get_queue(queue_name)._messages_lock
            with added:
                # rescan now and then too: messages also become visible by timeouts
                added.wait(min(0.05, remaining))

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQSBackend.receive_message = original  # type: ignore[method-assign]


def sqs_url(endpoint: str, region: str = "us-east-1", **options: Any) -> str:
    """An `sqs://` URL for a local endpoint, with moto's dummy credentials and `options`."""
    query = urlencode(
        {"endpoint_url": endpoint, **{k: str(v) for k, v in options.items()}}, safe=":/"
    )
    return f"sqs://{quote(MOTO_KEY_ID)}:{quote(MOTO_SECRET_KEY)}@{region}?{query}"
