"""Registers `redis://` and `rediss://` through the `anyqueue` entry point (imports no client)."""

from __future__ import annotations

from collections.abc import Callable

from anyqueue.capabilities import Capabilities
from anyqueue.hookspecs import hookimpl
from anyqueue.plugins import BackendSpec

#: the claims of a server that persists every write; a connected driver sets `durable=False`
#: when the server does not (see RedisDriver._persistence)
CAPABILITIES = Capabilities(
    ordering="global",
    durable=True,
    ack_timeout=True,
    delay=True,
    wildcards=True,
    replays_history=False,
    nack=True,
    max_body_bytes=16 * 1024 * 1024,
    max_delay_seconds=None,
    duplicate_fraction=0.0,
)


@hookimpl
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="redis",
            schemes=("redis", "rediss"),
            driver="anyqueue_redis.driver:RedisDriver",
            distribution="anyqueue-redis",
            capabilities=CAPABILITIES,
            description=(
                "Redis lists with leases in Lua scripts; durable when the server runs "
                "appendonly yes + appendfsync always"
            ),
            harness="anyqueue_redis.testing:RedisHarness",
            baseline="anyqueue_redis.bench:baseline",
        )
    )
