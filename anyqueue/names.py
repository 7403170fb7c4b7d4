"""Portable topic, group and pattern names, and AMQP-style pattern matching.

A name is `[A-Za-z0-9][A-Za-z0-9._-]{0,199}`, optionally followed by `.dead` suffixes (dead-letter
topics). A pattern uses `*` (one word) and `#` (zero or more words) as whole dot-separated words.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import InvalidName

DEAD_SUFFIX = ".dead"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}(?:\.dead)*")
_RULE = "1-200 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def check_name(name: object, what: str = "topic") -> str:
    """Return `name` if it is a valid portable topic or group name, else raise InvalidName."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    raise InvalidName(f"invalid {what} name {name!r}: use {_RULE}")


def is_pattern(topic: str) -> bool:
    """True when `topic` contains a wildcard word."""
    return "*" in topic or "#" in topic


def check_topic_or_pattern(topic: object) -> str:
    """Validate a subscription target: a topic name, or a pattern of name words, `*` and `#`."""
    if not isinstance(topic, str) or not is_pattern(topic):
        return check_name(topic)
    words = topic.split(".")
    for word in words:
        if word in ("*", "#"):
            continue
        if not word or not re.fullmatch(r"[A-Za-z0-9_-]+", word):
            raise InvalidName(
                f"invalid pattern {topic!r}: words are names, '*' (one word) or '#' (any words)"
            )
    if len(topic) > 200 + 5 * topic.count(DEAD_SUFFIX):
        raise InvalidName(f"invalid pattern {topic!r}: longer than 200 characters")
    return topic


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of `topic` (or of a pattern: the pattern of its dead letters)."""
    return topic + DEAD_SUFFIX


def matches(pattern: str, topic: str) -> bool:
    """AMQP topic matching, except that a pattern reaches a dead-letter topic only if it ends in
    `.dead` itself (so `logs.#` does not catch `logs.eu.dead`)."""
    if topic.endswith(DEAD_SUFFIX) and not pattern.endswith(DEAD_SUFFIX):
        return False
    if not is_pattern(pattern):
        return pattern == topic
    return _match_words(tuple(pattern.split(".")), tuple(topic.split(".")))


@lru_cache(maxsize=65536)
def _match_words(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # Iterative matcher with backtracking on the last '#', as AMQP brokers do.
    p = w = 0
    star_p, star_w = -1, 0
    while w < len(words):
        if p < len(pattern) and pattern[p] == "#":
            star_p, star_w = p, w
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == words[w]):
            p += 1
            w += 1
        elif star_p >= 0:
            star_w += 1
            w = star_w
            p = star_p + 1
        else:
            return False
    while p < len(pattern) and pattern[p] == "#":
        p += 1
    return p == len(pattern)
