"""A throwaway RabbitMQ node for tests, and the conformance harness with its failure hooks.

`RabbitNode` runs the installed rabbitmq-server (Debian's package) in a temp dir on free
loopback ports: AMQP, AMQPS (with a CA and certificate it makes), Erlang distribution, its own
epmd and the CLI's distribution port, so nothing clashes with another node or a fixed port. No
plugins, so no management listener. `restart()` keeps the data directory (durable messages come
back); `close()` stops the node and its epmd and kills whatever is left of its process group.

`RabbitHarness` hands the node to the conformance suite: `restart` stops and starts it,
`drop_connection` has the server close the client's connection (`rabbitmqctl close_connection`)
or, without a node, cuts the client's socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import anyqueue
from anyqueue_conformance import Harness, Unverifiable

#: where Debian keeps the scripts that run as the calling user (/usr/sbin wraps them in `su`)
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 180.0


def scripts_dir() -> Path | None:
    """The directory of rabbitmq-server and rabbitmqctl, or None if not installed."""
    configured = os.environ.get("RABBITMQ_SCRIPTS_DIR")
    if configured:
        return Path(configured)
    if (DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server")
    return Path(found).parent if found else None


def free_port() -> int:
    """A TCP port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RabbitNode:
    """One rabbitmq-server node in `directory` (a new temp dir by default)."""

    def __init__(self, directory: str | Path | None = None, *, tls: bool = True) -> None:
        scripts = scripts_dir()
        if scripts is None:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self._scripts = scripts
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="anyqueue-rabbitmq-"))
        self.node = f"aq-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self._epmd_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.directory / "server.out"
        self._env = self._environment()
        if tls:
            self._make_certificates()
        self._write_config()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        """amqps:// to `localhost`, the name in the server certificate (pass `ca_file`)."""
        if self.tls_port is None:
            raise RuntimeError("this node was started without TLS")
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def ca_file(self) -> str:
        return str(self.directory / "tls" / "ca.pem")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        if self._process is not None and self._process.poll() is None:
            return
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [str(self._scripts / "rabbitmq-server")],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # its own process group, killed as one on close
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts_connections():
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited at start; see {self._log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start in time; see {self._log}")
            time.sleep(0.2)
        self.ctl("await_startup", "--timeout", str(int(START_TIMEOUT)))

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the node gracefully (its data stays); kill it if it will not stop."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.ctl("stop", timeout=60)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            self._kill_group()
            process.wait(10)

    def restart(self) -> None:
        """Stop and start the node, keeping its data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the node and its epmd; remove the directory if this node made it."""
        try:
            self.stop()
        finally:
            self._kill_group()
            epmd = shutil.which("epmd")
            if epmd:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    subprocess.run(
                        [epmd, "-port", str(self._epmd_port), "-kill"],
                        env=self._env,
                        capture_output=True,
                        timeout=10,
                    )
            if self._own_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_group(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control -------------------------------------------------------------------------------
    def ctl(self, *args: str, timeout: float = 120) -> str:
        """Run `rabbitmqctl -n NODE ARGS...`; its output, or CalledProcessError."""
        result = subprocess.run(
            [str(self._scripts / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout.decode()

    def close_connection(self, connection_name: str) -> None:
        """Have the server close the client connection named `connection_name`."""
        listing = self.ctl("list_connections", "pid", "client_properties", "--silent")
        # one row per connection: "<node.pid>\t[{...client properties...}]"
        pids = [row.split("\t", 1)[0] for row in listing.splitlines() if connection_name in row]
        if not pids:
            raise RuntimeError(f"no connection named {connection_name!r} on {self.node}")
        for pid in pids:
            self.ctl("close_connection", pid, "anyqueue test: connection dropped")

    # -- setup ---------------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        home = self.directory / "home"
        home.mkdir(parents=True, exist_ok=True)
        ctl_port = free_port()
        env = dict(os.environ)
        env.update(
            HOME=str(home),  # the Erlang cookie lives here, shared by server and CLI
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CTL_DIST_PORT_MIN=str(ctl_port),
            RABBITMQ_CTL_DIST_PORT_MAX=str(min(ctl_port + 10, 65535)),
            RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.directory / "log"),
            RABBITMQ_PID_FILE=str(self.directory / "rabbitmq.pid"),
            RABBITMQ_CONFIG_FILE=str(self.directory / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.directory / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_PORT=str(self._epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _write_config(self) -> None:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "disk_free_limit.absolute = 10MB",
            "log.file.level = warning",
            "log.console = false",
        ]
        if self.tls_port is not None:
            tls = self.directory / "tls"
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {tls / 'ca.pem'}",
                f"ssl_options.certfile = {tls / 'server.pem'}",
                f"ssl_options.keyfile = {tls / 'server.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (self.directory / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq-env.conf").write_text("")

    def _make_certificates(self) -> None:
        """A CA and a server certificate for `localhost` (not 127.0.0.1, so a connection to
        the address fails host name verification, as it should)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is needed to make the test certificates")
        tls = self.directory / "tls"
        tls.mkdir(exist_ok=True)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], cwd=tls, check=True, capture_output=True)

        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=anyqueue test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=localhost",
        )  # fmt: skip
        (tls / "server.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost\n"
            "authorityKeyIdentifier=keyid\n"
            "subjectKeyIdentifier=hash\n"
        )
        run(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3", "-out", "server.pem", "-extfile", "server.ext",
        )  # fmt: skip
        for name in ("server.key", "ca.key"):
            (tls / name).chmod(0o644)  # the node may run as another user than the one making it


class RabbitHarness(Harness):
    """The conformance harness for amqp:// URLs, with hooks when it knows the node."""

    def __init__(
        self,
        url: str,
        *,
        node: RabbitNode | None = None,
        scale: float = 1.0,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(url, scale=scale, time_scale=time_scale)
        self.node = node

    def restart(self) -> None:
        if self.node is None:
            raise Unverifiable("restart needs the RabbitNode the tests started")
        self.node.restart()

    def drop_connection(self, broker: anyqueue.Broker) -> None:
        driver = broker._driver
        if self.node is not None:
            self.node.close_connection(driver.connection_name)  # type: ignore[attr-defined]
        else:
            driver.drop_connections()  # type: ignore[attr-defined]
