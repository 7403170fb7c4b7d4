"""Test support for `sqs://`: the conformance Harness, and a moto SQS+SNS server to run against.

    with moto_server() as endpoint:
        url = sqs_url(endpoint)      # sqs://testing:***@us-east-1?endpoint_url=...
        broker = anyqueue.connect(url)

`moto_server` needs `moto[server]` (a test dependency, not a runtime one).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import anyqueue
from anyqueue_conformance.harness import Harness, Unverifiable

#: dummy credentials for moto, which accepts any
MOTO_KEY_ID = "testing"
MOTO_SECRET_KEY = "moto-test-secret"


class SQSHarness(Harness):
    """Failure hooks for `sqs://`.

    restart: not possible. SQS is a managed service, and moto keeps everything in memory, so
    durability across a restart is UNVERIFIABLE here (SQS itself stores messages redundantly).
    drop_connection: closes the client's HTTP connections and abandons the deliveries it holds,
    as a consumer that died would; SQS returns them when their visibility timeout runs out, so
    connect with a short `visibility_timeout` to keep that wait short.
    """

    def restart(self) -> None:
        raise Unverifiable(
            "SQS cannot be restarted from a test (a managed service; moto keeps everything in "
            "memory), so durability across a restart cannot be shown"
        )

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        hook = getattr(broker._driver, "drop_connections", None)
        if hook is None:
            raise Unverifiable(f"{broker!r} is not an sqs:// connection")
        hook()


@contextlib.contextmanager
def moto_server(*, quiet: bool = True) -> Iterator[str]:
    """Run moto's SQS and SNS (server mode, in a thread) on a free loopback port; yield its
    endpoint URL and stop it afterwards."""
    from moto.server import ThreadedMotoServer

    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def sqs_url(endpoint: str, region: str = "us-east-1", **options: Any) -> str:
    """An `sqs://` URL for a local endpoint, with moto's dummy credentials and `options`."""
    query = urlencode({"endpoint_url": endpoint, **{k: str(v) for k, v in options.items()}})
    return f"sqs://{quote(MOTO_KEY_ID)}:{quote(MOTO_SECRET_KEY)}@{region}?{query}"
