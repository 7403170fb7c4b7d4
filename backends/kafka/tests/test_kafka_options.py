"""kafka:// URLs, options, the librdkafka pass-through, credentials and Kafka names (no broker)."""

from __future__ import annotations

import re

import pytest

import anyqueue
from anyqueue.config import BrokerURL, parse_options
from anyqueue_kafka import naming
from anyqueue_kafka.driver import KafkaDriver, KafkaOptions, librdkafka_settings
from anyqueue_kafka.testing import free_port

KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def client_config(url: str, **keywords: object) -> dict[str, object]:
    parsed = BrokerURL.parse(url)
    options = parse_options(KafkaOptions, parsed.query, keywords)
    return KafkaDriver._client_config(parsed, options)


def test_bootstrap_servers_come_from_the_url_host_list() -> None:
    config = client_config("kafka://k1.example:9092,k2.example:9093")
    assert config["bootstrap.servers"] == "k1.example:9092,k2.example:9093"
    assert "security.protocol" not in config


def test_credentials_in_the_url_mean_sasl_over_tls() -> None:
    config = client_config("kafka://alice:s%40cret@k1:9093")
    assert (config["sasl.username"], config["sasl.password"]) == ("alice", "s@cret")
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["security.protocol"] == "sasl_ssl"
    explicit = client_config(
        "kafka://alice:pw@k1:9092?security_protocol=sasl_plaintext&sasl_mechanism=scram-sha-512"
    )
    assert explicit["security.protocol"] == "sasl_plaintext"
    assert explicit["sasl.mechanism"] == "SCRAM-SHA-512"


def test_bad_urls_and_options_are_config_errors() -> None:
    for url, keywords in [
        ("kafka://", {}),
        ("kafka://k1:9092/some/path", {}),
        ("kafka://k1:9092?partitions=0", {}),
        ("kafka://k1:9092?session_timeout=-1", {}),
        ("kafka://k1:9092?security_protocol=carrier-pigeon", {}),
        ("kafka://k1:9092", {"sasl_username": "only-a-name"}),
    ]:
        with pytest.raises(anyqueue.ConfigError):
            client_config(url, **keywords)


def test_librdkafka_settings_pass_through_but_never_credentials() -> None:
    assert librdkafka_settings("socket.keepalive.enable=true, client.rack=eu-1a") == {
        "socket.keepalive.enable": "true",
        "client.rack": "eu-1a",
    }
    assert librdkafka_settings({"queued.max.messages.kbytes": 1024}) == {
        "queued.max.messages.kbytes": 1024
    }
    with pytest.raises(anyqueue.ConfigError, match="name=value"):
        librdkafka_settings("just-a-name")
    for setting in ("sasl.password=hunter22", "ssl.key.password=hunter22"):
        with pytest.raises(anyqueue.ConfigError) as raised:
            librdkafka_settings(setting)
        assert "hunter22" not in str(raised.value)


def test_unreachable_broker_is_a_connection_error_without_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"kafka://bob:topsecret@127.0.0.1:{port}?security_protocol=sasl_plaintext&timeout=0.5"
    with pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(url)
    shown = f"{raised.value} {raised.value!r}"
    assert "topsecret" not in shown
    assert f"127.0.0.1:{port}" in shown
    with pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(
            f"kafka://127.0.0.1:{port}?timeout=0.5",
            sasl_username="bob",
            sasl_password="topsecret",
            security_protocol="sasl_plaintext",
        )
    assert "topsecret" not in f"{raised.value} {raised.value!r}"


def test_group_ids_are_unambiguous_per_topic() -> None:
    assert naming.group_id("a.b", "c") != naming.group_id("a", "b.c")
    assert naming.group_id("orders", "workers") == "orders:workers"
    assert naming.marks_group_id("orders", "workers") != naming.group_id("orders", "workers")


def test_retry_topics_are_distinct_and_valid_kafka_names() -> None:
    longest_topic = "t" * 200 + ".dead"
    longest_group = "g" * 200
    pairs = [
        ("a.b", "c"),
        ("a", "b.c"),
        ("orders", "workers"),
        ("orders", "workers2"),
        (longest_topic, longest_group),
        (longest_topic[:-1] + "x", longest_group),
        (longest_topic, longest_group[:-1] + "h"),
    ]
    names = [naming.retry_topic(topic, group) for topic, group in pairs]
    assert len(set(names)) == len(names)
    for name in names:
        assert KAFKA_TOPIC.fullmatch(name), name
        assert name.startswith(naming.RETRY_PREFIX)
