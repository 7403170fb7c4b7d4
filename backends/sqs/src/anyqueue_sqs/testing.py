"""Test support for `sqs://`: the conformance Harness, and a moto SQS+SNS server to run against.

    with moto_server() as endpoint:
        url = sqs_url(endpoint)      # sqs://testing:***@us-east-1?endpoint_url=...
        broker = anyqueue.connect(url)

    with MotoSQS() as server:        # the same, shaped like the other backends' test servers
        broker = anyqueue.connect(server.url)

`moto_server` needs `moto[server]` (a test dependency, not a runtime one) and runs it in a child
process (`python -m anyqueue_sqs.testing`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import anyqueue
from anyqueue_conformance.harness import Harness, Unverifiable

#: dummy credentials for moto, which accepts any
MOTO_KEY_ID = "testing"
MOTO_SECRET_KEY = "moto-test-secret"
#: how long the moto server may take to start or to stop
SERVER_START_SECONDS = 30.0


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
    """Run moto's SQS and SNS (server mode) in a child process on a free loopback port; yield
    its endpoint URL and stop it afterwards.

    A process of its own, as a real broker is: moto's request handling (pure Python) then runs
    beside the clients under test instead of competing with them for one interpreter lock. The
    child exits when its standard input closes, so it never outlives the test run.

    serialize_receives: make moto's ReceiveMessage atomic, as SQS's is (see
    `_serialized_receives`); without it, concurrent receives on a FIFO queue can hand two
    messages of one message group to two consumers at once.
    """
    command = [sys.executable, "-m", "anyqueue_sqs.testing"]
    if not quiet:
        command.append("--verbose")
    if not serialize_receives:
        command.append("--concurrent-receives")
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            assert child.stdout is not None
            endpoint = child.stdout.readline().strip()
            if not endpoint.startswith("http://"):
                child.wait(SERVER_START_SECONDS)
                errors.seek(0)
                raise RuntimeError(
                    "the moto server did not start: "
                    + errors.read().decode(errors="replace")[-2000:]
                )
            yield endpoint
        finally:
            if child.stdin is not None:
                child.stdin.close()  # the child's signal to stop
            try:
                child.wait(SERVER_START_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def serve(*, verbose: bool = False, serialize_receives: bool = True) -> None:
    """The child process of `moto_server`: print the endpoint, serve until stdin closes."""
    from moto.server import ThreadedMotoServer

    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    with (
        _linear_queue_bookkeeping(),
        _serialized_receives() if serialize_receives else contextlib.nullcontext(),
    ):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=verbose)
        server.start()
        try:
            host, port = server.get_host_and_port()
            print(f"http://{host}:{port}", flush=True)
            sys.stdin.read()  # returns at end of file: the parent closed it, or died
        finally:
            server.stop()


@contextlib.contextmanager
def _linear_queue_bookkeeping() -> Iterator[None]:
    """Work around moto's cost per message growing with the queue's length (moto 5.x).

    For every message a ReceiveMessage returns, moto checks the retention period through
    `get_queue_attributes`, which computes every attribute of the queue three times over,
    including the three ApproximateNumberOfMessages* counts: each a scan of the whole queue that
    converts the current time through datetime objects (~15 µs) for every message in it.
    SendMessage computes all the attributes once too. Draining 2,000 messages took 290 s and
    publishing them 80 s: moving N messages cost O(N²) slow clock reads.

    Here the retention check reads the one attribute it needs, moto's SQS models read the clock
    with `time.time()` (the same epoch value), and the scans behind the counts read it once per
    scan instead of once per message. `Queue.attributes` (which a send reads for one setting,
    ContentBasedDeduplication) computes an attribute only when it is read, so a send no longer
    counts the queue three times: 2,000 messages publish through SNS in ~4 s and drain in ~8 s,
    and a 10,000-message queue publishes as fast as an empty one.
    """
    from moto.sqs import models

    slow_unix_time, slow_unix_time_millis = (
        vars(models)[name] for name in ("unix_time", "unix_time_millis")
    )

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else float(slow_unix_time(dt))

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(slow_unix_time_millis(dt))

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > time.time())

    # the same tests as Message.visible and Message.delayed, with one clock read per scan
    def available(queue: Any) -> list[Any]:
        now = time.time() * 1000.0
        return [m for m in queue._messages if m.visible_at < now and m.delayed_until <= now]

    def delayed(queue: Any) -> int:
        now = time.time() * 1000.0
        return sum(now < m.delayed_until for m in queue._messages)

    def not_visible(queue: Any) -> int:
        now = time.time() * 1000.0
        return sum(m.visible_at >= now for m in queue._messages)

    original_get_queue_attributes = models.SQSBackend.get_queue_attributes

    def get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> Any:
        # the response serializer wants a real dict ("All" returns queue.attributes itself)
        return dict(original_get_queue_attributes(self, queue_name, attribute_names))

    replacements: list[tuple[Any, str, Any]] = [
        (models, "unix_time", unix_time),
        (models, "unix_time_millis", unix_time_millis),
        (
            models.SQSBackend,
            "is_message_valid_based_on_retention_period",
            is_message_valid_based_on_retention_period,
        ),
        (models.Queue, "attributes", property(_LazyQueueAttributes)),
        (models.SQSBackend, "get_queue_attributes", get_queue_attributes),
        (models.Queue, "messages", property(available)),
        (models.Queue, "approximate_number_of_messages", property(lambda q: len(available(q)))),
        (models.Queue, "approximate_number_of_messages_delayed", property(delayed)),
        (models.Queue, "approximate_number_of_messages_not_visible", property(not_visible)),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    for owner, name, replacement in replacements:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


class _LazyQueueAttributes(Mapping[str, Any]):
    """moto's `Queue.attributes` (same names, same values), each computed when it is read."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        self._names = names  # Policy and RedrivePolicy are among the base attributes

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name == "RedrivePolicy" and self._queue.redrive_policy:
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, _attribute_field(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@functools.cache
def _attribute_field(name: str) -> str:
    from moto.core.utils import camelcase_to_underscores

    return str(camelcase_to_underscores(name))


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


if __name__ == "__main__":
    serve(
        verbose="--verbose" in sys.argv[1:],
        serialize_receives="--concurrent-receives" not in sys.argv[1:],
    )
