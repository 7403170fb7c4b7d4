"""The harness: how the conformance suite reaches a broker and provokes failures.

A backend author implements only what their test setup can do. A hook left out makes the
tests that need it report UNVERIFIABLE in the matrix (never a silent skip).
"""

from __future__ import annotations

from typing import Any

import anyqueue
import anyqueue.config

#: URL options that only say where the server is, not how the backend behaves
_NOT_SEMANTIC = {
    "endpoint_url",
    "ssl_ca_certs",
    "ca_certs",
    "ca_file",
    "cafile",
    "tls_ca",
    "ssl_cafile",
}


class Unverifiable(Exception):
    """The harness cannot provoke what a test needs (e.g. no way to restart the broker)."""


class Harness:
    """The URL under test plus optional failure hooks.

    scale: multiplies message counts (e.g. 0.2 for moto's SQS, which slows down on big queues).
    time_scale: multiplies waits and timeouts (for brokers with slow group joins or polling).
    """

    def __init__(self, url: str, *, scale: float = 1.0, time_scale: float = 1.0) -> None:
        self.url = url
        self.scale = scale
        self.time_scale = time_scale

    def connect(self, **options: Any) -> anyqueue.Broker:
        """A new connection to the broker under test."""
        return anyqueue.connect(self.url, **options)

    def restart(self) -> None:
        """Stop and start the broker, keeping its data directory. Connections may drop."""
        raise Unverifiable("the harness has no hook to restart the broker")

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        """Cut `broker`'s connection(s) as a network failure would (the client must recover)."""
        driver = broker._driver
        hook = getattr(driver, "drop_connections", None)
        if hook is None:
            raise Unverifiable("the harness has no hook to drop a connection")
        hook()

    # -- helpers for the cases -------------------------------------------------------------
    def count(self, n: int) -> int:
        """`n` messages, scaled."""
        return max(1, int(n * self.scale))

    def seconds(self, s: float) -> float:
        """`s` seconds, scaled."""
        return s * self.time_scale

    @property
    def label(self) -> str:
        """How the matrix names this setup: the URL without credentials, host or port, so
        runs on throwaway servers compare (e.g. `sqs://us-east-1?fifo=true`)."""
        from anyqueue.config import BrokerURL

        url = BrokerURL.parse(self.url)
        query = "&".join(f"{k}={v}" for k, v in url.query.items() if k not in _NOT_SEMANTIC)
        where = url.netloc if url.scheme in ("memory", "sqs") else ""
        return f"{url.scheme}://{where}" + (f"?{query}" if query else "")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {anyqueue.config.redact_url(self.url)}>"


def harness_for(url: str, **kwargs: Any) -> Harness:
    """The harness a backend plugin ships for `url`, or the plain one."""
    from anyqueue.config import BrokerURL
    from anyqueue.plugins import import_string, registry

    spec = registry.for_scheme(BrokerURL.parse(url).scheme)
    harness_class = import_string(spec.harness) if spec.harness else Harness
    harness: Harness = harness_class(url, **kwargs)
    return harness
