from __future__ import annotations

import pytest

from anyqueue import InvalidName
from anyqueue.names import check_name, check_topic_or_pattern, matches


@pytest.mark.parametrize(
    "name", ["a", "orders", "logs.eu.error", "A-b_c.9", "x" * 200, "x" * 200 + ".dead"]
)
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 201, "-a", ".a", "_a", "a b", "a/b", "a:b", "é", "a*", None, 3]
)
def test_invalid_names_say_what_is_allowed(name: object) -> None:
    with pytest.raises(InvalidName, match="1-200 characters"):
        check_name(name)


@pytest.mark.parametrize(
    ("pattern", "topic", "hit"),
    [
        ("logs.*.error", "logs.eu.error", True),
        ("logs.*.error", "logs.eu.x.error", False),
        ("logs.*.error", "logs.error", False),
        ("logs.#", "logs", True),
        ("logs.#", "logs.a.b.c", True),
        ("logs.#", "logsx.a", False),
        ("#", "anything.at.all", True),
        ("#.error", "error", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("a.#.#.b", "a.b", True),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        # a pattern reaches dead-letter topics only if it ends in .dead itself
        ("logs.#", "logs.eu.dead", False),
        ("#", "orders.dead", False),
        ("logs.*.dead", "logs.eu.dead", True),
        ("#.dead", "orders.dead", True),
        ("orders", "orders", True),
        ("orders", "orders.x", False),
    ],
)
def test_pattern_matching(pattern: str, topic: str, hit: bool) -> None:
    assert matches(pattern, topic) is hit


@pytest.mark.parametrize("pattern", ["a.*b", "a.#.", "a..*", "a.*.é"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidName):
        check_topic_or_pattern(pattern)
