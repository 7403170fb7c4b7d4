"""How an anyqueue Message travels through SNS and SQS: an XML-safe body plus message attributes.

SQS and SNS bodies are text limited to the characters XML allows, so a body that is UTF-8 text of
such characters (JSON, most text) is sent as it is, anything else base64-encoded. Headers become
native message attributes where SQS allows them (valid attribute name, non-empty value of safe
characters, at most 9 of them: SNS and SQS carry 10 attributes and one is ours). Everything else
(id, content type, key, correlation id, reply-to, the body's encoding and the headers that did not
fit) rides in one JSON attribute named `anyqueue`, so headers round-trip exactly.

A message without that attribute (sent by another SQS client) is still read: its body as UTF-8
text, its String and Number attributes as headers, SQS's MessageId as its id.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from anyqueue.errors import Error, MessageTooLarge
from anyqueue.message import OCTET_STREAM, TEXT, Message

#: the attribute carrying anyqueue's metadata
META_ATTRIBUTE = "anyqueue"
#: SNS and SQS carry at most 10 message attributes; one is META_ATTRIBUTE
MAX_NATIVE_HEADERS = 9
#: the largest message SNS (Publish, PublishBatch in total) and SQS via SNS accept
MAX_MESSAGE_BYTES = 256 * 1024

#: characters SQS accepts in bodies and attribute values (XML 1.0 minus CR, which XML parsers
#: may normalise away, so that what arrives is byte-for-byte what was sent)
_SAFE_TEXT = re.compile("[\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
#: SQS/SNS message attribute names: letters, digits, "_", "-", "."; no leading, trailing or
#: doubled dot; not starting with "AWS." or "Amazon." (any case)
_ATTRIBUTE_NAME = re.compile(r"(?!(?i:aws\.|amazon\.))[A-Za-z0-9_-](?:[A-Za-z0-9_-]|\.(?!\.))*")
_ATTRIBUTE_NAME_LIMIT = 256
_STRING = "String"

#: encodings of the body text ("e" in the metadata; absent: the UTF-8 text itself)
BASE64 = "b64"
EMPTY = "empty"
_EMPTY_PLACEHOLDER = "-"  # SQS refuses empty bodies


@dataclass(frozen=True)
class Encoded:
    """A message ready for SNS Publish / SQS SendMessage, and its size as SNS counts it."""

    body: str
    attributes: dict[str, dict[str, str]]
    size: int


def _safe(text: str) -> bool:
    return _SAFE_TEXT.fullmatch(text) is not None


def _native_header(name: str, value: str) -> bool:
    return (
        name != META_ATTRIBUTE
        and len(name) <= _ATTRIBUTE_NAME_LIMIT
        and _ATTRIBUTE_NAME.fullmatch(name) is not None
        and value != ""
        and _safe(value)
    )


def encode(message: Message) -> Encoded:
    """The SQS form of `message`; MessageTooLarge if it exceeds what SNS/SQS accept."""
    meta: dict[str, Any] = {"i": message.id}
    if message.content_type != OCTET_STREAM:
        meta["c"] = message.content_type
    if message.key is not None:
        meta["k"] = message.key
    if message.correlation_id is not None:
        meta["r"] = message.correlation_id
    if message.reply_to is not None:
        meta["t"] = message.reply_to
    body = _body_text(message.body, meta)
    attributes: dict[str, dict[str, str]] = {}
    overflow: dict[str, str] = {}
    for name, value in message.headers.items():
        if len(attributes) < MAX_NATIVE_HEADERS and _native_header(name, value):
            attributes[name] = {"DataType": _STRING, "StringValue": value}
        else:
            overflow[name] = value
    if overflow:
        meta["h"] = overflow
    attributes[META_ATTRIBUTE] = {
        "DataType": _STRING,
        # ASCII-only JSON: control characters and lone surrogates become \u escapes
        "StringValue": json.dumps(meta, separators=(",", ":")),
    }
    size = len(body.encode()) + sum(
        len(name) + len(_STRING) + len(attribute["StringValue"].encode())
        for name, attribute in attributes.items()
    )
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"message {message.id} is {size} bytes as sent to SQS (body "
            f"{'base64-encoded ' if meta.get('e') == BASE64 else ''}plus attributes), over the "
            f"limit of {MAX_MESSAGE_BYTES}; nothing was sent"
        )
    return Encoded(body, attributes, size)


def _body_text(body: bytes, meta: dict[str, Any]) -> str:
    if not body:
        meta["e"] = EMPTY
        return _EMPTY_PLACEHOLDER
    try:
        text = body.decode()
    except UnicodeDecodeError:
        pass
    else:
        if _safe(text):
            return text
    meta["e"] = BASE64
    return base64.b64encode(body).decode("ascii")


def decode(sqs_message: dict[str, Any], topic: str) -> Message:
    """A received SQS message as an anyqueue Message (receipt and delivery count set)."""
    attributes: dict[str, dict[str, Any]] = sqs_message.get("MessageAttributes") or {}
    raw_meta = attributes.get(META_ATTRIBUTE, {}).get("StringValue")
    meta: dict[str, Any] = {}
    if raw_meta is not None:
        try:
            meta = json.loads(raw_meta)
        except ValueError as err:
            raise Error(f"corrupt anyqueue metadata on SQS message: {err}") from None
    headers: dict[str, str] = {}
    for name, attribute in attributes.items():
        if name != META_ATTRIBUTE and "StringValue" in attribute:
            headers[name] = attribute["StringValue"]
    headers.update(meta.get("h") or {})
    text: str = sqs_message.get("Body", "")
    encoding = meta.get("e")
    if encoding == EMPTY:
        body = b""
    elif encoding == BASE64:
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise Error(f"corrupt base64 body on SQS message: {err}") from None
    else:
        body = text.encode()
    count = int(sqs_message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    default_type = OCTET_STREAM if raw_meta is not None else TEXT
    return Message(
        body,
        key=meta.get("k"),
        headers=headers,
        id=meta.get("i") or sqs_message.get("MessageId"),
        content_type=meta.get("c") or default_type,
        correlation_id=meta.get("r"),
        reply_to=meta.get("t"),
        topic=topic,
        delivery_count=count,
        redelivered=count > 1,
    )
