"""Connecting: options, credentials kept out of messages, unreachable servers, TLS that
verifies certificates and host names, and the raw-client benchmark baseline."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import anyqueue
from anyqueue_redis.bench import baseline
from anyqueue_redis.testing import RedisServer, free_port, kill_connections


def test_unknown_and_ill_typed_options_are_refused(redis_server: RedisServer) -> None:
    for query in ("nonsense=1", "consumer_timeout=soon", "consumer_timeout=0.1", "prefix="):
        with pytest.raises(anyqueue.ConfigError):
            anyqueue.connect(f"{redis_server.url}?{query}")
    with pytest.raises(anyqueue.ConfigError, match="rediss"):
        anyqueue.connect(redis_server.url, ssl_ca_certs="/etc/ssl/certs/ca.pem")
    with pytest.raises(anyqueue.ConfigError, match="database number"):
        anyqueue.connect(f"redis://127.0.0.1:{redis_server.port}/orders")


def test_an_unreachable_server_is_a_connection_error() -> None:
    with pytest.raises(anyqueue.ConnectionError):
        anyqueue.connect(f"redis://127.0.0.1:{free_port()}/0?retry_timeout=0.3")


def test_passwords_never_show(fresh_server: RedisServer) -> None:
    admin = redis.Redis(port=fresh_server.port)
    admin.config_set("requirepass", "s3cret-pass")
    admin.close()
    good = f"redis://:s3cret-pass@127.0.0.1:{fresh_server.port}/0"
    with anyqueue.connect(good) as broker:
        assert "s3cret-pass" not in repr(broker) and "s3cret-pass" not in str(broker)
        broker.declare("t", "g")
    with pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(f"redis://:wrong-pass@127.0.0.1:{fresh_server.port}/0")
    assert "wrong-pass" not in str(raised.value)


def test_the_harness_cuts_exactly_one_brokers_connections(redis_server: RedisServer) -> None:
    with anyqueue.connect(redis_server.url) as one, anyqueue.connect(redis_server.url) as other:
        one.declare("cut", "g")
        other.declare("cut", "g")
        assert kill_connections(redis_server.url, one._driver.client_name) >= 1
        assert kill_connections(redis_server.url, one._driver.client_name) == 0
        other.publish("cut", b"unaffected")
        one.publish("cut", b"reconnected")  # a cut connection reconnects for the next call


def test_the_baseline_measures_every_figure_and_cleans_up(redis_server: RedisServer) -> None:
    admin = redis.Redis(port=redis_server.port)
    before = set(admin.scan_iter("anyqueue-baseline:*"))
    figures = baseline(redis_server.url, messages=200, body_size=16, requests=5)
    assert set(figures) == {"publish_per_s", "consume_per_s", "request_p50_ms", "request_p99_ms"}
    assert all(value > 0 for value in figures.values())
    assert set(admin.scan_iter("anyqueue-baseline:*")) == before
    admin.close()


# -- TLS ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a server certificate for the name `localhost` only (not 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(command: str) -> None:
        subprocess.run(
            ["openssl", *shlex.split(command)], cwd=folder, check=True, capture_output=True
        )

    openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca")
    openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost")
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
        "-days 2 -extfile san.cnf"
    )
    return folder


@pytest.fixture(scope="module")
def tls_server(
    certificates: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    tls_options = {
        "--tls-cert-file": certificates / "server.pem",
        "--tls-key-file": certificates / "server.key",
        "--tls-ca-cert-file": certificates / "ca.pem",
        "--tls-auth-clients": "no",
    }
    extra = [str(part) for option in tls_options.items() for part in option]
    with RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=True, extra=extra) as server:
        yield server


def test_rediss_verifies_the_certificate(tls_server: RedisServer, certificates: Path) -> None:
    ca = certificates / "ca.pem"
    with anyqueue.connect(f"rediss://localhost:{tls_server.port}/0?ssl_ca_certs={ca}") as broker:
        broker.declare("secure", "g")
        broker.publish("secure", b"over tls")
        with broker.subscribe("secure", "g") as sub:
            message = sub.receive(timeout=5)
            assert message is not None and message.body == b"over tls"
            message.ack()
        with broker.serve("secure.rpc", lambda request: request.body[::-1]):
            for body in (b"first", b"second"):  # the second answer checks the first's answers
                assert broker.request("secure.rpc", body, timeout=30).body == body[::-1]


def test_rediss_refuses_an_unknown_ca(tls_server: RedisServer) -> None:
    with pytest.raises(anyqueue.ConnectionError):
        anyqueue.connect(f"rediss://localhost:{tls_server.port}/0?retry_timeout=0.5")


def test_rediss_refuses_a_certificate_for_another_name(
    tls_server: RedisServer, certificates: Path
) -> None:
    ca = certificates / "ca.pem"
    with pytest.raises(anyqueue.ConnectionError):
        anyqueue.connect(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={ca}")
