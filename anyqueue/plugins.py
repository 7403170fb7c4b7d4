"""Finds backend plugins through entry points and imports a driver only when its scheme is used.

Built-in `memory://` registers through the same entry point as any third-party backend.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .capabilities import Capabilities
from .errors import BackendNotFound

#: schemes of first-party backends that may not be installed, and what to install for them
KNOWN_DISTRIBUTIONS = {
    "amqp": "anyqueue[rabbitmq]",
    "amqps": "anyqueue[rabbitmq]",
    "redis": "anyqueue[redis]",
    "rediss": "anyqueue[redis]",
    "sqs": "anyqueue[sqs]",
    "kafka": "anyqueue[kafka]",
}


@dataclass(frozen=True)
class BackendSpec:
    """What a plugin contributes: its URL schemes and where its driver lives.

    `driver` and `baseline` are import strings ("package.module:Class"), imported on first use
    so that `import anyqueue` never imports a broker client. `capabilities` are the default
    claims, shown by `anyqueue backends`; a connected driver may refine them from its options.
    """

    name: str
    schemes: tuple[str, ...]
    driver: str
    distribution: str
    capabilities: Capabilities
    description: str = ""
    #: optional raw-client benchmark ("module:function") that `anyqueue bench` runs alongside,
    #: called as `baseline(url, *, messages, body_size, requests, batch)` and returning the
    #: figures of `anyqueue.bench.FIGURES` it measured
    baseline: str | None = None
    #: optional conformance harness class ("module:Class") with the backend's failure hooks
    harness: str | None = None

    def load_driver(self) -> Any:
        """Import and return the driver class."""
        return import_string(self.driver)


def import_string(target: str) -> Any:
    """Import "package.module:attribute"."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_scheme: dict[str, BackendSpec] | None = None

    def _load(self) -> dict[str, BackendSpec]:
        with self._lock:
            if self._by_scheme is None:
                manager = pluggy.PluginManager("anyqueue")
                manager.add_hookspecs(hookspecs)
                manager.load_setuptools_entrypoints("anyqueue")
                found: dict[str, BackendSpec] = {}

                def register(spec: BackendSpec) -> None:
                    for scheme in spec.schemes:
                        found.setdefault(scheme, spec)

                manager.hook.anyqueue_register_backends(register=register)
                self._by_scheme = found
            return self._by_scheme

    def backends(self) -> list[BackendSpec]:
        unique = {spec.name: spec for spec in self._load().values()}
        return sorted(unique.values(), key=lambda spec: spec.name)

    def for_scheme(self, scheme: str) -> BackendSpec:
        specs = self._load()
        if scheme in specs:
            return specs[scheme]
        installed = ", ".join(f"{s}://" for s in sorted(specs)) or "none"
        hint = KNOWN_DISTRIBUTIONS.get(scheme)
        advice = (
            f"install it with: pip install '{hint}'"
            if hint
            else "install a plugin that provides it (entry-point group 'anyqueue')"
        )
        raise BackendNotFound(f"no backend for {scheme}://; installed: {installed}; {advice}")


registry = _Registry()


def backends() -> list[BackendSpec]:
    """The installed backend plugins, one entry per backend."""
    return registry.backends()
