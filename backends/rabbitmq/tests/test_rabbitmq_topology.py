"""The mapping onto RabbitMQ (names, exchanges, delay buckets, headers) and URL parsing:
pure functions, no broker needed."""

from __future__ import annotations

import ssl

import pytest

import anyqueue
from anyqueue.config import BrokerURL, parse_options
from anyqueue.names import matches
from anyqueue_rabbitmq.driver import RabbitOptions, connection_parameters
from anyqueue_rabbitmq.topology import (
    DELIVERIES_HEADER,
    KEY_HEADER,
    MAX_NAME_BYTES,
    TOPIC_HEADER,
    count_header,
    delay_bucket_ms,
    exchange_for,
    group_queue,
    user_headers,
)


def test_group_queues_never_collide_and_fit_amqp() -> None:
    pairs = [("a.b", "c"), ("a", "b.c"), ("a.b.c", "d"), ("logs.#", "all"), ("logs.*", "all")]
    longest = "t" * 200
    pairs += [(longest, "g" * 200), (longest, "g" * 199 + "h"), (longest + ".dead", "g" * 200)]
    names = [group_queue("anyqueue", topic, group) for topic, group in pairs]
    assert len(set(names)) == len(names)
    assert all(len(name.encode()) <= MAX_NAME_BYTES for name in names)
    assert group_queue("anyqueue", "orders", "workers") == "anyqueue:orders:workers"


def test_dead_letter_topics_live_on_their_own_exchange() -> None:
    # what the broker does (plain AMQP matching within one exchange) is what the contract says:
    # a pattern reaches a dead-letter topic only if the pattern ends in .dead itself
    for pattern, topic in [
        ("logs.#", "logs.eu.dead"),
        ("#", "orders.dead"),
        ("#", "orders"),
        ("logs.*.dead", "logs.eu.dead"),
        ("#.dead", "orders.dead"),
        ("*.dead", "orders.dead"),
        ("logs.dead.#", "logs.dead.x"),
        ("logs.#", "logs.eu.error"),
        ("orders.dead", "orders.dead"),
    ]:
        routed = exchange_for("x", pattern) == exchange_for("x", topic) and _amqp_match(
            pattern.split("."), topic.split(".")
        )
        assert routed == matches(pattern, topic), (pattern, topic)
    assert exchange_for("x", "orders") == "x"
    assert exchange_for("x", "orders.dead") == "x.dead"


def _amqp_match(pattern: list[str], words: list[str]) -> bool:
    """Plain AMQP topic matching: `*` one word, `#` zero or more."""
    if not pattern:
        return not words
    if pattern[0] == "#":
        return _amqp_match(pattern[1:], words) or (bool(words) and _amqp_match(pattern, words[1:]))
    return bool(words) and pattern[0] in ("*", words[0]) and _amqp_match(pattern[1:], words[1:])


@pytest.mark.parametrize("seconds", [0.0001, 0.001, 0.05, 0.051, 0.1, 0.999, 1.0, 1.5, 2.345, 61.7])
def test_delay_buckets_are_never_shorter(seconds: float) -> None:
    bucket = delay_bucket_ms(seconds)
    assert bucket >= seconds * 1000
    assert bucket <= max(seconds * 1000 * 1.1, seconds * 1000 + 10)


def test_delay_buckets_are_few() -> None:
    buckets = {delay_bucket_ms(ms / 1000) for ms in range(1, 60_000)}
    assert len(buckets) < 250


def test_bookkeeping_headers_are_stripped_and_foreign_values_become_text() -> None:
    raw = {
        "trace": "abc",
        KEY_HEADER: "k",
        TOPIC_HEADER: "t",
        DELIVERIES_HEADER: 3,
        "x-death": [{"count": 1}],
        "x-delivery-count": 2,
        "number": 7,
        "raw": b"\xff",
    }
    assert user_headers(raw) == {"trace": "abc", "number": "7", "raw": "\ufffd"}
    assert count_header(raw, DELIVERIES_HEADER) == 3
    assert count_header({DELIVERIES_HEADER: "junk"}, DELIVERIES_HEADER) == 0
    assert count_header(None, DELIVERIES_HEADER) == 0


def _parameters(url: str, **options: object) -> object:
    parsed = BrokerURL.parse(url)
    settings = parse_options(RabbitOptions, parsed.query, options)
    return connection_parameters(parsed, settings, "test")


def test_url_defaults_and_vhosts() -> None:
    plain = _parameters("amqp://")
    assert (plain.host, plain.port, plain.virtual_host) == ("localhost", 5672, "/")  # type: ignore[attr-defined]
    assert plain.credentials.username == "guest"  # type: ignore[attr-defined]
    assert _parameters("amqp://h/%2F").virtual_host == "/"  # type: ignore[attr-defined]
    assert _parameters("amqp://h/prod").virtual_host == "prod"  # type: ignore[attr-defined]
    assert _parameters("amqp://u:p%40ss@h:1234/").credentials.password == "p@ss"  # type: ignore[attr-defined]


def test_amqps_verifies_certificate_and_host_name_by_default() -> None:
    secure = _parameters("amqps://rabbit.example")
    context = secure.ssl_options.context  # type: ignore[attr-defined]
    assert secure.port == 5671  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert secure.ssl_options.server_hostname == "rabbit.example"  # type: ignore[attr-defined]
    loose = _parameters("amqps://rabbit.example?verify=false").ssl_options.context  # type: ignore[attr-defined]
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname


@pytest.mark.parametrize(
    "options",
    [
        {"queue_type": "stream"},
        {"heartbeat": -1},
        {"operation_timeout": 0.0},
        {"exchange": "amq.topic"},
        {"connection_attempts": 0},
        {"nonsense": 1},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(anyqueue.ConfigError):
        anyqueue.connect("amqp://127.0.0.1:1", **options)


def test_tls_options_on_plain_amqp_are_refused() -> None:
    with pytest.raises(anyqueue.ConfigError):
        anyqueue.connect("amqp://127.0.0.1:1?verify=false")
