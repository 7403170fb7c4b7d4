"""The key layout and the stored format: escaping keeps names apart, every key of a group shares
one cluster slot, messages are stored as anyqueue envelopes."""

from __future__ import annotations

import itertools

import pytest
from redis.crc import key_slot

import anyqueue
from anyqueue_redis.keys import GROUP_SUFFIXES, Layout, check_prefix, escape


def test_separators_in_names_never_make_two_groups_share_a_key() -> None:
    layout = Layout("app")
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a", "b%3Ac"), ("{a}", "b"), ("a", "b")]
    bases = [layout.group(topic, group).base for topic, group in pairs]
    assert len(set(bases)) == len(pairs)
    every_key = [key for base in bases for key in (f"{base}:{s}" for s in GROUP_SUFFIXES)]
    assert len(set(every_key)) == len(every_key)


def test_escaping_is_injective_on_awkward_names() -> None:
    alphabet = ["a", ":", "%", "{", "}", "3A", "%3A"]
    names = {"".join(parts) for n in range(1, 4) for parts in itertools.product(alphabet, repeat=n)}
    escaped = {escape(name) for name in names}
    assert len(escaped) == len(names)
    assert all(not ({":", "{", "}"} & set(e)) for e in escaped)


def test_portable_names_are_kept_as_they_are() -> None:
    assert escape("logs.eu-west_1.error.dead") == "logs.eu-west_1.error.dead"
    assert Layout("anyqueue").group("orders", "billing").base == "anyqueue:g:{orders:billing}"


def test_all_keys_of_a_group_hash_to_one_cluster_slot() -> None:
    layout = Layout("app:prod")
    for topic, group in [("orders", "billing"), ("logs.#", "all"), ("x" * 200 + ".dead", "dead")]:
        keys = layout.group(topic, group)
        slots = {key_slot(key.encode()) for key in (*keys.all, keys.box("c1"))}
        assert len(slots) == 1, f"{topic}/{group} spans slots {slots}"
    one, other = layout.group("orders", "billing"), layout.group("orders", "audit")
    assert key_slot(one.all[0].encode()) != key_slot(other.all[0].encode())


def test_prefix_may_not_carry_hash_tags_or_spaces() -> None:
    assert check_prefix("app:queues") == "app:queues"
    for bad in ["", "a{b", "a}b", "a b"]:
        with pytest.raises(ValueError):
            check_prefix(bad)
    with pytest.raises(anyqueue.ConfigError):
        anyqueue.connect("redis://127.0.0.1:1/0?prefix=a{b")
