"""Test support: a throwaway redis-server and the conformance harness with its failure hooks.

`RedisServer` runs `redis-server` on a free loopback port in a directory of its own (AOF with
`appendfsync always` by default) and can restart it on the same port and data. `RedisHarness`
gives the conformance suite its hooks: `restart()` (SIGTERM, then start again with the same
directory; needs a RedisServer) and `drop_connection()` (CLIENT KILL of the broker's
connections; works against any server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

import anyqueue
from anyqueue.config import BrokerURL, parse_options
from anyqueue_conformance import Harness, Unverifiable

from .connection import plain_client

REDIS_SERVER = os.environ.get("ANYQUEUE_REDIS_SERVER", "redis-server")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server process for tests: `start()`, `restart()`, `stop()`; a context manager.

    appendfsync: "always" makes the server durable for anyqueue; "everysec" or "no" does not.
    extra: more `--option value` arguments (TLS settings, for example).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        appendfsync: str = "always",
        extra: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.extra = list(extra)
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        port_options = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else [
                "--port",
                str(self.port),
            ]
        )
        command = [
            REDIS_SERVER,
            *port_options,
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                log = self.directory / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {tail}")
            if self._accepts_connections():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def _accepts_connections(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            if self.tls:
                return True
            return self._ping()
        return False

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=2).ping())
        except redis.RedisError:
            return False  # still loading its data, for example

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (redis flushes its AOF and exits), SIGKILL if it does not stop in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisHarness(Harness):
    """The conformance harness for `redis://`: restart needs `server`; drop_connection does not."""

    def __init__(self, url: str, *, server: RedisServer | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.server = server

    def restart(self) -> None:
        if self.server is None:
            raise Unverifiable("restart needs a RedisServer the harness controls")
        self.server.restart()

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        """CLIENT KILL every connection of `broker` (they carry the driver's client name)."""
        kill_connections(self.url, getattr(broker._driver, "client_name", ""))


def kill_connections(url: str, client_name: str) -> int:
    """CLIENT KILL the connections named `client_name` on the server at `url`; how many."""
    from .driver import RedisDriver

    parsed = BrokerURL.parse(url)
    options = parse_options(RedisDriver.Options, parsed.query, {})
    admin = plain_client(parsed, options)
    try:
        killed = 0
        for client in admin.client_list():
            if client.get("name") == client_name:
                with contextlib.suppress(redis.ResponseError):  # it left meanwhile
                    killed += int(admin.client_kill_filter(_id=client["id"]))
        return killed
    finally:
        admin.close()
