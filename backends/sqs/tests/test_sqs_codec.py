"""The SQS wire format: any bytes and headers round-trip exactly within SQS's rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

import anyqueue
from anyqueue_sqs import codec
from anyqueue_sqs.plugin import MAX_BODY_BYTES


def through_sqs(message: anyqueue.Message) -> tuple[anyqueue.Message, dict[str, Any]]:
    """Encode, shape as SQS's ReceiveMessage returns it, decode."""
    form = codec.encode(message)
    received = {
        "MessageId": "sqs-id",
        "ReceiptHandle": "handle",
        "Body": form.body,
        "MessageAttributes": form.attributes,
        "Attributes": {"ApproximateReceiveCount": "3"},
    }
    return codec.decode(received, "topic"), form.attributes


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"plain text",
        "héllo 🎉 \t\n tab and newline".encode(),
        b"carriage\r\nreturn",  # CR is not sent as text: XML parsers may drop it
        bytes(range(256)),
        b"\xff\xfe\xc3\x28",  # not UTF-8
        b"nul\x00inside",
        "\ufffe".encode(),  # not an XML character
        json.dumps({"a": [1, 2]}).encode(),
    ],
)
def test_bodies_round_trip(body: bytes) -> None:
    message = anyqueue.Message(body, id="m1", content_type="application/x-test")
    back, _ = through_sqs(message)
    assert back.body == body
    assert (back.id, back.content_type, back.topic) == ("m1", "application/x-test", "topic")
    assert (back.delivery_count, back.redelivered) == (3, True)


def test_text_travels_as_text_binary_as_base64() -> None:
    text = codec.encode(anyqueue.Message(b'{"readable": true}', id="1"))
    binary = codec.encode(anyqueue.Message(b"\x00\x01", id="2"))
    assert text.body == '{"readable": true}'
    assert binary.body == "AAE="
    assert json.loads(binary.attributes[codec.META_ATTRIBUTE]["StringValue"])["e"] == "b64"


def test_many_and_odd_headers_round_trip_within_ten_attributes() -> None:
    headers = {f"h{i}": f"value {i}" for i in range(25)}
    headers.update(
        {
            "empty": "",
            "control": "nul\x00bell\x07",
            "name with spaces": "v",
            "AWS.reserved": "v",
            "a..b": "v",
            codec.META_ATTRIBUTE: "our own attribute name",
            "surrogate": "\udc80",
        }
    )
    message = anyqueue.Message(b"x", id="m", key="ключ ☃", headers=headers, reply_to="r")
    back, attributes = through_sqs(message)
    assert back.headers == headers
    assert (back.key, back.reply_to, back.correlation_id) == ("ключ ☃", "r", None)
    assert len(attributes) == 10
    # the first nine valid ones are native attributes, readable by any SQS client
    assert attributes["h0"] == {"DataType": "String", "StringValue": "value 0"}


def test_size_counts_encoding_and_attributes() -> None:
    largest = bytes(i % 251 for i in range(MAX_BODY_BYTES))
    assert codec.encode(anyqueue.Message(largest, id="x" * 26)).size <= codec.MAX_MESSAGE_BYTES
    with pytest.raises(anyqueue.MessageTooLarge, match="base64"):
        codec.encode(anyqueue.Message(largest, id="x", headers={"big": "v" * 10_000}))
    with pytest.raises(anyqueue.MessageTooLarge):
        codec.encode(anyqueue.Message(b"t" * (codec.MAX_MESSAGE_BYTES - 10), id="x"))


def test_foreign_messages_are_read_as_text() -> None:
    foreign = {
        "MessageId": "3f1c",
        "ReceiptHandle": "h",
        "Body": "from another client",
        "MessageAttributes": {
            "origin": {"DataType": "String", "StringValue": "billing"},
            "attempt": {"DataType": "Number", "StringValue": "2"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00"},
        },
        "Attributes": {"ApproximateReceiveCount": "1"},
    }
    message = codec.decode(foreign, "t")
    assert (message.body, message.id, message.content_type) == (
        b"from another client",
        "3f1c",
        "text/plain",
    )
    assert message.headers == {"origin": "billing", "attempt": "2"}
    assert (message.delivery_count, message.redelivered) == (1, False)


def test_corrupt_metadata_is_an_anyqueue_error() -> None:
    broken = {
        "MessageId": "1",
        "Body": "x",
        "MessageAttributes": {codec.META_ATTRIBUTE: {"DataType": "String", "StringValue": "{"}},
    }
    with pytest.raises(anyqueue.Error, match="corrupt"):
        codec.decode(broken, "t")
