from __future__ import annotations

import os
import threading

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


def test_ids_taken_in_batches_from_many_threads_are_unique() -> None:
    taken: list[list[str]] = []

    def take() -> None:
        mine = []
        for size in (1, 7, 100, 1000) * 5:
            mine += new_id.many(size) if size > 1 else [new_id()]
        taken.append(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [one for mine in taken for one in mine]
    assert len(every) == 8 * 5 * 1108
    assert len(set(every)) == len(every)
    assert new_id.many(0) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_takes_other_ids() -> None:
    read, write = os.pipe()
    new_id()  # the parent's generator is in use before the fork
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, " ".join([new_id(), *new_id.many(3)]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split()
    ours = [new_id(), *new_id.many(3)]
    assert len(theirs) == 4
    assert {id_[:16] for id_ in theirs} != {id_[:16] for id_ in ours}
    assert not set(theirs) & set(ours)


def test_an_outgoing_message_is_what_message_of_bytes_builds() -> None:
    fast, checked = anyqueue.Message.outgoing(b"\x00body"), anyqueue.Message(b"\x00body")
    assert {name: getattr(fast, name) for name in anyqueue.Message.__slots__} == {
        name: getattr(checked, name) for name in anyqueue.Message.__slots__
    }


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
