"""Registers `memory://` through the `anyqueue` entry point, exactly like any other plugin."""

from __future__ import annotations

from collections.abc import Callable

from ..capabilities import Capabilities
from ..hookspecs import hookimpl
from ..plugins import BackendSpec

CAPABILITIES = Capabilities(
    ordering="global",
    durable=False,
    ack_timeout=True,
    delay=True,
    wildcards=True,
    replays_history=False,
    nack=True,
    max_body_bytes=16 * 1024 * 1024,
)


@hookimpl
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="memory",
            schemes=("memory",),
            driver="anyqueue.memory.driver:MemoryDriver",
            distribution="anyqueue",
            capabilities=CAPABILITIES,
            description="in-process broker: the embedded default and the reference semantics",
        )
    )
