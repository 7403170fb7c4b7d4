"""The Redis key layout: every key under one prefix, names escaped, one hash tag per group.

A group is identified by its binding (topic or pattern) and its name. Its keys all share the hash
tag `{<topic>:<group>}` so the scripts that touch one group stay within one Redis Cluster slot.
Names are escaped before they become part of a key, so `("a:b", "c")` and `("a", "b:c")` never
share a key even if a caller bypasses anyqueue's name validation. See docs/backends/redis.md.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

#: the keys of one group, in the order the group scripts receive them as KEYS[1..7]
GROUP_SUFFIXES = (
    "ready",  # list: `<entry>[:<deliveries so far>]` items waiting for a consumer, oldest first
    "body",  # hash: entry number -> envelope (anyqueue.envelope bytes)
    "owner",  # hash: entry number -> `<consumer>:<delivery count>` while it is leased
    "timers",  # zset, scores in ms: `d:<entry>:<count>` delayed until, `l:<entry>` lease
    #            deadline (ack_timeout), `c:<consumer>` alive until
    "waiting",  # list: `<consumer>:<max>:<ack_timeout_ms>:<box_ttl_ms>` of blocked receivers
    "seq",  # string: the last entry number handed out
    "alive",  # string with a TTL: an ephemeral group exists while this does
)

#: where each group key sits in a script's KEYS (1-based, as Lua sees it)
GROUP_KEY_INDEX = {suffix: position + 1 for position, suffix in enumerate(GROUP_SUFFIXES)}

#: reply inbox addresses are this prefix plus 32 hex digits
INBOX_ADDRESS_PREFIX = "anyqueue.inbox."

_ESCAPES = {"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"}


def escape(name: str) -> str:
    """Make `name` safe as one segment of a key: `:` separates segments and `{` `}` delimit
    hash tags, so those (and `%`, the escape character itself) are percent-encoded."""
    if not any(character in name for character in _ESCAPES):
        return name
    return "".join(_ESCAPES.get(character, character) for character in name)


def check_prefix(prefix: str) -> str:
    """A prefix must be non-empty and may not contain braces or whitespace (it precedes the hash
    tags, so a brace in it would change which part of a key Redis Cluster hashes)."""
    if not prefix or any(c in prefix for c in "{} \t\r\n"):
        raise ValueError(f"prefix must be non-empty, without braces or whitespace: {prefix!r}")
    return prefix


def new_token() -> str:
    """A random identifier for consumers, ephemeral groups, inboxes and connections."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class GroupKeys:
    """The keys of one group: `base` is `<prefix>:g:{<topic>:<group>}`; each key appends a
    suffix from GROUP_SUFFIXES."""

    base: str

    @property
    def all(self) -> tuple[str, ...]:
        """Every key of the group, in GROUP_SUFFIXES order (the group scripts' KEYS)."""
        return tuple(f"{self.base}:{suffix}" for suffix in GROUP_SUFFIXES)

    def key(self, suffix: str) -> str:
        return f"{self.base}:{suffix}"

    def box(self, consumer: str) -> str:
        """The list where a blocked receiver finds the messages leased to it while it waited."""
        return f"{self.base}:box:{consumer}"

    def subscriber_wake(self, subscriber: str) -> str:
        """The list a subscription's blocked receive also waits on, so close() can wake it."""
        return f"{self.base}:wake:{subscriber}"


class Layout:
    """Key names for one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        #: hash: pattern group base -> "d|<pattern>" (durable) or "e|<pattern>" (ephemeral)
        self.patterns = f"{prefix}:patterns"
        #: hash: durable group base -> "<topic or pattern>\n<group>", for operators and tools
        self.catalog = f"{prefix}:groups"

    def group(self, binding: str, group: str) -> GroupKeys:
        """The keys of `group` on `binding` (a topic or a pattern)."""
        return GroupKeys(f"{self.prefix}:g:{{{escape(binding)}:{escape(group)}}}")

    def route(self, topic: str) -> str:
        """Hash of the groups bound to exactly `topic`: group base -> "d" or "e"."""
        return f"{self.prefix}:route:{escape(topic)}"

    def inbox(self, token: str) -> str:
        """The reply list of one requester."""
        return f"{self.prefix}:inbox:{{{token}}}"

    def inbox_wake(self, token: str) -> str:
        return f"{self.prefix}:inbox:{{{token}}}:wake"

    def keeper_wake(self, token: str) -> str:
        """The list a driver's heartbeat thread waits on between beats (close() wakes it)."""
        return f"{self.prefix}:keeper:{{{token}}}"
