"""The Message type, body encoding (bytes / str / JSON, never pickle) and message ids."""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .subscription import Subscription

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"
JSON = "application/json"

Body = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any]


def encode_body(body: object) -> tuple[bytes, str]:
    """Turn a user body into bytes and its content type; anything but bytes/str/JSON: TypeError."""
    kind = type(body)
    if kind is bytes:
        return body, OCTET_STREAM  # type: ignore[return-value]
    if kind is str:
        return body.encode(), TEXT  # type: ignore[attr-defined]
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), OCTET_STREAM
    if isinstance(body, str):
        return str(body).encode(), TEXT
    if isinstance(body, (dict, list)):
        try:
            return json.dumps(body, separators=(",", ":")).encode(), JSON
        except (TypeError, ValueError) as err:
            raise TypeError(f"a dict/list body must be JSON-serialisable: {err}") from None
    raise TypeError(
        f"message body must be bytes, bytearray, memoryview, str, dict or list, "
        f"not {kind.__name__}; encode it yourself (anyqueue never pickles)"
    )


def check_headers(headers: object) -> dict[str, str]:
    """Validate headers: a mapping of str to str (returned as a dict)."""
    if headers is None:
        return {}
    if type(headers) is dict and all(type(k) is str and type(v) is str for k, v in headers.items()):
        return headers
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str to str, not {type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"header {name!r}: names and values must be str, got "
                f"{type(name).__name__} -> {type(value).__name__}"
            )
    return dict(headers)


class _IdFactory:
    """Unique ids: a random per-process prefix and a counter (fast, and safe after fork)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # a child gets a new prefix at fork, so ids need no getpid() check each (hot path)
            os.register_at_fork(after_in_child=self._reset)
            self._check_pid = False
        else:
            self._check_pid = True

    def _reset(self) -> None:
        self._pid = os.getpid()
        # each next() formats one counter value, in C: unique across threads without a lock
        self._ids = map((secrets.token_hex(8) + "%010x").__mod__, itertools.count(1))

    def __call__(self) -> str:
        if self._check_pid and os.getpid() != self._pid:
            self._reset()
        return next(self._ids)

    def many(self, count: int) -> list[str]:
        """`count` new ids at once (a batch being published)."""
        if self._check_pid and os.getpid() != self._pid:
            self._reset()
        return list(itertools.islice(self._ids, count))


new_id = _IdFactory()


class Message:
    """A message: what you publish (`Message(body, key=...)`) and what you receive.

    Received messages carry `topic`, `delivery_count` (1 on the first delivery), `redelivered`,
    and are settled with `ack()` / `nack()`. Settling twice, or after the subscription closed,
    does nothing.
    """

    __slots__ = (
        "_settled",
        "_subscription",
        "body",
        "content_type",
        "correlation_id",
        "delivery_count",
        "headers",
        "id",
        "key",
        "receipt",
        "redelivered",
        "reply_to",
        "topic",
    )

    def __init__(
        self,
        body: Body = b"",
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        content_type: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        topic: str = "",
        delivery_count: int = 0,
        redelivered: bool = False,
        receipt: Any = None,
    ) -> None:
        if type(body) is bytes:  # the common case, without a call (hot path)
            self.body: bytes = body
            self.content_type: str = content_type or OCTET_STREAM
        else:
            self.body, default_type = encode_body(body)
            self.content_type = content_type or default_type
        self.key = key
        # validated here, so a Message built by hand cannot smuggle non-str headers into publish
        self.headers: dict[str, str] = check_headers(headers) if headers else {}
        self.id: str = id or ""
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.topic = topic
        self.delivery_count = delivery_count
        self.redelivered = redelivered
        #: the backend's handle for settling this delivery (delivery tag, receipt, offset...)
        self.receipt = receipt
        self._subscription: Subscription | None = None
        self._settled = False

    @classmethod
    def delivered(
        cls,
        body: bytes,
        *,
        key: str | None,
        headers: dict[str, str],
        id: str,
        content_type: str,
        correlation_id: str | None,
        reply_to: str | None,
        topic: str,
        delivery_count: int,
        receipt: Any,
    ) -> Message:
        """A received message, as a driver builds it from what its broker returned: the body
        is bytes and the headers a fresh dict of str already, so the checks `__init__` makes
        on user input are skipped (the hot path of every receive)."""
        message = cls.__new__(cls)
        message.body = body
        message.content_type = content_type
        message.key = key
        message.headers = headers
        message.id = id
        message.correlation_id = correlation_id
        message.reply_to = reply_to
        message.topic = topic
        message.delivery_count = delivery_count
        message.redelivered = delivery_count > 1
        message.receipt = receipt
        message._subscription = None
        message._settled = False
        return message

    @classmethod
    def outgoing(cls, body: bytes) -> Message:
        """A new message of a bytes body and nothing else, as `publish_batch` builds one per
        bytes item: `Message(body)` without the checks its other arguments need."""
        message = cls.__new__(cls)
        message.body = body
        message.content_type = OCTET_STREAM
        message.key = None
        message.headers = {}
        message.id = ""
        message.correlation_id = None
        message.reply_to = None
        message.topic = ""
        message.delivery_count = 0
        message.redelivered = False
        message.receipt = None
        message._subscription = None
        message._settled = False
        return message

    def _delivered_copy(self, delivery_count: int, receipt: Any) -> Message:
        """This stored message as handed out once more: a copy with its own headers dict, the
        delivery's count and receipt, not settled (in-process backends such as memory://,
        whose every delivery is a copy)."""
        return Message.delivered(
            self.body,
            key=self.key,
            headers=dict(self.headers) if self.headers else {},
            id=self.id,
            content_type=self.content_type,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            topic=self.topic,
            delivery_count=delivery_count,
            receipt=receipt,
        )

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode()

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def ack(self) -> None:
        """Done with this message: it is removed from its group."""
        if self._subscription is not None:
            self._subscription._settle(self, ack=True)

    def nack(self, requeue: bool = True, delay: float | None = None) -> None:
        """Give the message back: redelivered (after `delay` seconds), or with `requeue=False`
        published to the dead-letter topic `<topic>.dead` and acked."""
        if self._subscription is not None:
            self._subscription._settle(self, ack=False, requeue=requeue, delay=delay)

    def __repr__(self) -> str:
        preview = self.body[:40]
        more = "..." if len(self.body) > 40 else ""
        return (
            f"<Message id={self.id!r} topic={self.topic!r} key={self.key!r} "
            f"delivery_count={self.delivery_count} body={preview!r}{more}>"
        )
