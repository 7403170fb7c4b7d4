from __future__ import annotations

import pytest

import anyqueue
from anyqueue.envelope import pack, unpack
from anyqueue.message import encode_body, new_id


@pytest.mark.parametrize(
    ("body", "data", "content_type"),
    [
        (b"raw", b"raw", "application/octet-stream"),
        (bytearray(b"ba"), b"ba", "application/octet-stream"),
        (memoryview(b"mv"), b"mv", "application/octet-stream"),
        ("tëxt", "tëxt".encode(), "text/plain"),
        ({"a": [1, None]}, b'{"a":[1,null]}', "application/json"),
        ([1, "x"], b'[1,"x"]', "application/json"),
    ],
)
def test_bodies_encode(body: object, data: bytes, content_type: str) -> None:
    assert encode_body(body) == (data, content_type)


@pytest.mark.parametrize("body", [42, 1.5, None, object(), {1, 2}, ("t",)])
def test_other_bodies_are_refused_never_pickled(body: object) -> None:
    with pytest.raises(TypeError, match="never pickles"):
        encode_body(body)


def test_unserialisable_json_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="JSON"):
        encode_body({"when": object()})


def test_headers_must_be_strings() -> None:
    with pytest.raises(TypeError, match="header 'n'"):
        anyqueue.Message(b"x", headers={"n": 1})  # type: ignore[dict-item]


def test_ids_are_unique() -> None:
    ids = {new_id() for _ in range(10000)}
    assert len(ids) == 10000


def test_unsubscribed_message_settles_silently() -> None:
    message = anyqueue.Message(b"x")
    message.ack()
    message.nack()


def test_envelope_round_trips_everything() -> None:
    original = anyqueue.Message(
        bytes(range(256)),
        key="k☃",
        headers={"a\nb": "\x00ü🎉", "": ""},
        id="id-1",
        content_type="application/x-custom",
        correlation_id="c",
        reply_to="r",
    )
    decoded, extra = unpack(pack(original, attempt=3), topic="t", receipt=9)
    for field in ("body", "key", "headers", "id", "content_type", "correlation_id", "reply_to"):
        assert getattr(decoded, field) == getattr(original, field)
    assert (decoded.topic, decoded.receipt, extra) == ("t", 9, {"attempt": 3})


def test_foreign_bytes_are_not_an_envelope() -> None:
    with pytest.raises(anyqueue.Error, match="not an anyqueue envelope"):
        unpack(b"hello")
