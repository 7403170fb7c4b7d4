"""The mapping of portable names onto SQS queue and SNS topic names: valid, short enough,
readable when possible, and never the same for two different names."""

from __future__ import annotations

import itertools
import re

import pytest

from anyqueue_sqs import naming

SQS_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")
SNS_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,256}|[A-Za-z0-9_-]{1,251}\.fifo")


def test_simple_names_stay_readable() -> None:
    assert naming.queue_name("aq", "orders.eu", "billing", fifo=False) == "aq-orders_eu__billing"
    assert naming.queue_name("aq", "orders", "billing", fifo=True) == "aq-orders__billing.fifo"
    assert naming.topic_name("aq", "logs.eu.error", fifo=False) == "aq-logs_eu_error"
    assert naming.topic_name("", "t", fifo=True) == "-t.fifo"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a.b", "c"), ("a", "b.c")),  # where the topic ends
        (("a_b", "c"), ("a.b", "c")),  # "_" and "." both become "_"
        (("a..b", "g"), ("a", "b..g")),  # ".." looks like the separator
        (("a.", "b"), ("a_", "b")),
        (("x" * 200, "g"), ("x" * 199 + "y", "g")),  # differ only past the readable head
        (("t", "g"), ("t.dead", "g")),
    ],
)
def test_lookalike_pairs_get_different_queues(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    for fifo in (False, True):
        assert naming.queue_name("aq", *first, fifo=fifo) != naming.queue_name(
            "aq", *second, fifo=fifo
        )


def test_every_small_name_pair_maps_to_its_own_queue() -> None:
    # all names up to 4 characters over the characters that could be confused
    words = ["".join(w) for n in range(4) for w in itertools.product("a._-", repeat=n)]
    names = ["a" + w for w in words] + ["b" + w for w in words[:20]]
    seen: dict[str, tuple[str, str]] = {}
    for topic, group in itertools.product(names, names[:60]):
        name = naming.queue_name("aq", topic, group, fifo=False)
        assert SQS_QUEUE.fullmatch(name), name
        assert seen.setdefault(name, (topic, group)) == (topic, group), name
    topics: dict[str, str] = {}
    for topic in names:
        name = naming.topic_name("aq", topic, fifo=False)
        assert topics.setdefault(name, topic) == topic


def test_longest_names_fit_and_are_hashed() -> None:
    longest = "t" * 200 + ".dead.dead"
    group = "g" * 200
    for fifo in (False, True):
        queue = naming.queue_name("a" * 20, longest, group, fifo=fifo)
        topic = naming.topic_name("a" * 20, longest, fifo=fifo)
        assert SQS_QUEUE.fullmatch(queue), queue
        assert SNS_TOPIC.fullmatch(topic), topic
        assert queue.startswith("a" * 20 + "_tttt")  # the hashed shape keeps a readable head
        assert queue.endswith(".fifo") == fifo


def test_hashed_names_never_meet_readable_or_temporary_ones() -> None:
    readable = naming.queue_name("aq", "orders", "g", fifo=False)
    hashed = naming.queue_name("aq", "my_orders", "g", fifo=False)
    temporary = naming.temporary_queue_name("aq", "sub", "orders", fifo=False)
    assert readable.startswith("aq-")
    assert hashed.startswith("aq_m")
    assert temporary.startswith("aq__sub-orders-")
    assert naming.queue_name("aq", "my_orders", "g", fifo=False) == hashed  # deterministic


def test_temporary_names_are_unique_and_valid() -> None:
    names = {
        naming.temporary_queue_name("p" * 20, kind, "x" * 200, fifo=fifo)
        for kind in ("sub", "reply")
        for fifo in (False, True)
        for _ in range(50)
    }
    assert len(names) == 200
    assert all(SQS_QUEUE.fullmatch(name) for name in names)
