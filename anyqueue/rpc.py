"""Request/reply on any backend: correlation ids, deadlines, one reply inbox per Broker.

A request carries `reply_to` (the caller's inbox address), a `correlation_id` and its deadline;
servers share the group `anyqueue.rpc` on the topic and skip requests whose caller gave up.
Replies with no waiting caller (late or duplicate) are dropped, never handed to another call.
A server sends its reply and then acks the request, in one driver call where the backend's
subscriptions offer one (`AnswersRequests`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .driver import Inbox
from .errors import Closed, Error, RemoteError, Timeout
from .message import Body, Message, encode_body, new_id

if TYPE_CHECKING:
    from .broker import Broker
    from .worker import Worker

log = logging.getLogger("anyqueue")

RPC_GROUP = "anyqueue.rpc"
DEADLINE_HEADER = "anyqueue-deadline"
ERROR_TYPE_HEADER = "anyqueue-error-type"
ERROR_MESSAGE_HEADER = "anyqueue-error-message"
REPLY_TOPIC_PREFIX = "anyqueue.reply."


class AnswersRequests(Protocol):
    """Optional for a `SubscriptionDriver`: answer a request in one call. The core looks the
    method up on the subscription a request came from and uses it instead of
    `Driver.send_reply` followed by the worker's ack; a backend saves round trips with it."""

    def reply_and_ack(self, request: Message, address: str, reply: Message) -> bool:
        """Deliver `reply` to `address` (an inbox from `open_inbox`, or a reply topic) and ack
        `request`, the reply reaching the broker first (an acked request whose reply was lost
        would be lost). Return False to leave both to the core. The worker still acks `request`
        afterwards; that ack must then do nothing."""
        ...


class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Message | None = None


class Requester:
    """The caller side: sends requests and routes replies from one inbox to waiting calls."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._closed = False
        self._inbox = self._open_inbox()
        self._reader: threading.Thread | None = None
        if self._inbox.listen is not None:
            self._inbox.listen(self._deliver)  # the driver pushes replies: no reader thread
        else:
            self._reader = threading.Thread(
                target=self._read_replies, name="anyqueue-replies", daemon=True
            )
            self._reader.start()

    def _open_inbox(self) -> Inbox:
        broker = self._broker
        inbox = broker._call(broker._driver.open_inbox)
        if inbox is not None:
            return inbox
        address = REPLY_TOPIC_PREFIX + uuid.uuid4().hex
        subscription = broker._call(
            lambda: broker._driver.subscribe(address, None, prefetch=1000, ack_timeout=None)
        )
        return Inbox(address, subscription)

    def request(
        self,
        topic: str,
        body: Body,
        *,
        timeout: float,
        headers: Mapping[str, str] | None,
    ) -> Message:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self._broker.declare(topic, RPC_GROUP)
        correlation_id = new_id()
        pending = _Pending()
        with self._lock:
            if self._closed:
                raise Closed("broker is closed")
            self._pending[correlation_id] = pending
        try:
            request_headers = dict(headers or {})
            request_headers[DEADLINE_HEADER] = repr(time.time() + timeout)
            self._broker.publish(
                topic,
                body,
                headers=request_headers,
                correlation_id=correlation_id,
                reply_to=self._inbox.address,
            )
            if not pending.done.wait(timeout):
                raise Timeout(f"no reply on {topic!r} within {timeout}s")
        finally:
            with self._lock:
                self._pending.pop(correlation_id, None)
        reply = pending.reply
        if reply is None:
            raise Closed("broker closed while waiting for a reply")
        error_type = reply.headers.get(ERROR_TYPE_HEADER)
        if error_type is not None:
            raise RemoteError(error_type, reply.headers.get(ERROR_MESSAGE_HEADER, ""))
        return reply

    def _read_replies(self) -> None:
        subscription = self._inbox.subscription
        while not self._closed:
            try:
                replies = self._broker._call(subscription.receive, 100, 1.0)
                if replies:
                    self._broker._call(subscription.ack, replies)
            except Error as err:
                if self._closed:
                    return
                log.warning("anyqueue: reading replies failed: %s; retrying", err)
                time.sleep(0.5)
                continue
            for reply in replies:
                self._deliver(reply)

    def _deliver(self, reply: Message) -> None:
        """Hand a reply to the call waiting for it; a late or unknown one is dropped."""
        with self._lock:
            pending = self._pending.pop(reply.correlation_id or "", None)
        if pending is None:
            log.debug("anyqueue: dropped a late or unknown reply %r", reply)
            return
        pending.reply = reply
        pending.done.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._pending = self._pending, {}
        for pending in waiting.values():
            pending.done.set()
        try:
            self._broker._call(self._inbox.subscription.close)
        except Error as err:
            log.debug("anyqueue: closing the reply inbox: %s", err)
        if self._reader is not None:
            self._reader.join(timeout=5)


def serve(
    broker: Broker, topic: str, handler: Callable[[Message], Any], *, concurrency: int
) -> Worker:
    """Start a worker answering requests on `topic` in the shared server group."""
    broker.declare(topic, RPC_GROUP)

    def answer(request: Message) -> None:
        deadline = request.headers.get(DEADLINE_HEADER)
        if deadline is not None and _expired(deadline):
            log.info("anyqueue: skipped request %s: its caller already gave up", request.id)
            return
        if not request.reply_to:
            log.warning("anyqueue: request %s on %r has no reply_to; dropped", request.id, topic)
            return
        try:
            reply = _reply_message(handler(request))
        except Exception as err:
            reply = Message(
                b"",
                headers={ERROR_TYPE_HEADER: type(err).__name__, ERROR_MESSAGE_HEADER: str(err)},
            )
        reply.correlation_id = request.correlation_id
        reply.id = new_id()
        _send_reply(broker, request, request.reply_to, reply)

    return broker.consume(
        topic, answer, group=RPC_GROUP, concurrency=concurrency, max_deliveries=None
    )


def _send_reply(broker: Broker, request: Message, address: str, reply: Message) -> None:
    """Send the reply to `request`; the worker acks the request once this returns (a backend
    with `AnswersRequests` acks it here already, after the reply)."""
    subscription = request._subscription
    if subscription is not None and not request._settled:
        # AnswersRequests.reply_and_ack, if the backend's subscriptions have it
        answer: Callable[[Message, str, Message], bool] | None = getattr(
            subscription._driver, "reply_and_ack", None
        )
        if answer is not None and broker._call(answer, request, address, reply):
            return
    broker._call(broker._driver.send_reply, address, reply)


def _expired(deadline: str) -> bool:
    try:
        return float(deadline) < time.time()
    except ValueError:
        return False


def _reply_message(result: Any) -> Message:
    if isinstance(result, Message):
        return Message(
            result.body,
            key=result.key,
            headers=dict(result.headers),
            content_type=result.content_type,
        )
    if result is None:
        return Message(b"", content_type="application/octet-stream")
    body, content_type = encode_body(result)
    return Message(body, content_type=content_type)
