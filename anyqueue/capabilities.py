"""What a backend promises: a frozen record the core enforces and the conformance suite verifies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Ordering = Literal["global", "per_key", "none"]


@dataclass(frozen=True)
class Capabilities:
    """The semantics one backend (with its current options) claims.

    ordering: "global" (one member of a group receives in publish order), "per_key" (messages with
        the same key arrive in publish order even across competing members), or "none".
    durable: accepted messages of a group survive a broker restart.
    ack_timeout: a message held past `subscribe(ack_timeout=...)` comes back to the group.
    delay: `nack(delay=...)` holds the message back at least that long.
    wildcards: `subscribe` accepts `*` / `#` patterns.
    replays_history: a newly created group also sees messages published before it existed.
    nack: `nack(requeue=True)` returns a message to its group for redelivery.
    max_body_bytes: the largest body `publish` accepts.
    max_delay_seconds: the longest `nack(delay=...)` (None: no limit).
    duplicate_fraction: upper bound on the fraction of messages delivered twice in a run with no
        failures (0.0 for exactly-once delivery when nothing goes wrong).
    """

    ordering: Ordering = "none"
    durable: bool = False
    ack_timeout: bool = False
    delay: bool = False
    wildcards: bool = False
    replays_history: bool = False
    nack: bool = True
    max_body_bytes: int = 1024 * 1024
    max_delay_seconds: float | None = None
    duplicate_fraction: float = 0.0
