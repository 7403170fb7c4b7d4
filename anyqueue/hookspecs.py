"""The pluggy hook a backend plugin implements (entry-point group `anyqueue`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .plugins import BackendSpec

hookspec = pluggy.HookspecMarker("anyqueue")
hookimpl = pluggy.HookimplMarker("anyqueue")


@hookspec
def anyqueue_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register backends by calling `register(BackendSpec(...))` once for each."""
