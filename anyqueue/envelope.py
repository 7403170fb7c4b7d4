"""One wire format for brokers that carry only bytes: metadata as JSON, then the raw body.

Layout: `AQ1` + 4-byte big-endian metadata length + JSON metadata + body. The body is never
re-encoded, so any bytes round-trip exactly; headers round-trip exactly through JSON.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .errors import Error
from .message import Message

MAGIC = b"AQ1"
_LENGTH = struct.Struct(">I")
# one encoder for every message: json.dumps(..., separators=...) builds a new one per call,
# which was a third of a Redis publish's Python time
_META_ENCODER = json.JSONEncoder(separators=(",", ":"))
_HEADER_SIZE = len(MAGIC) + _LENGTH.size


def pack(message: Message, **extra: Any) -> bytes:
    """Encode a message (and backend-specific `extra` metadata, e.g. a delivery count)."""
    meta: dict[str, Any] = {"i": message.id, "c": message.content_type}
    if message.key is not None:
        meta["k"] = message.key
    if message.headers:
        meta["h"] = message.headers
    if message.correlation_id is not None:
        meta["r"] = message.correlation_id
    if message.reply_to is not None:
        meta["t"] = message.reply_to
    if extra:
        meta["x"] = extra
    encoded = _META_ENCODER.encode(meta).encode()
    return b"".join((MAGIC, _LENGTH.pack(len(encoded)), encoded, message.body))


def unpack(data: bytes, **fields: Any) -> tuple[Message, dict[str, Any]]:
    """Decode `pack`'s output into a Message (with `fields` such as topic, receipt set) and the
    extra metadata. Anything else raises anyqueue.Error naming the problem."""
    if data[:3] != MAGIC or len(data) < _HEADER_SIZE:
        raise Error("not an anyqueue envelope (was it published by another client?)")
    (length,) = _LENGTH.unpack_from(data, 3)
    end = _HEADER_SIZE + length
    try:
        meta = json.loads(data[_HEADER_SIZE:end])
    except ValueError as err:
        raise Error(f"corrupt anyqueue envelope metadata: {err}") from None
    message = Message(
        data[end:],
        key=meta.get("k"),
        headers=meta.get("h") or {},
        id=meta.get("i"),
        content_type=meta.get("c") or "application/octet-stream",
        correlation_id=meta.get("r"),
        reply_to=meta.get("t"),
        **fields,
    )
    return message, meta.get("x") or {}


def packed_overhead(message: Message) -> int:
    """How many bytes `pack` adds to the body (for size limits on the encoded form)."""
    return len(
        pack(
            Message(
                b"",
                key=message.key,
                headers=message.headers,
                id=message.id,
                content_type=message.content_type,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
            )
        )
    )
