from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

import anyqueue
from anyqueue.config import BrokerURL, parse_options, redact_url, scrub, secret, secret_values


@dataclass(frozen=True)
class Options:
    retries: int = 3
    timeout: float = 1.5
    tls: bool = False
    mode: Literal["classic", "quorum"] = "classic"
    region: str | None = None
    api_secret: str | None = secret()


def test_query_strings_are_converted_by_type() -> None:
    parsed = parse_options(
        Options,
        {"retries": "5", "timeout": "2", "tls": "yes", "mode": "quorum", "region": "none"},
        {},
    )
    assert parsed == Options(retries=5, timeout=2.0, tls=True, mode="quorum", region=None)


def test_keywords_must_have_the_right_type() -> None:
    assert parse_options(Options, {}, {"retries": 7, "timeout": 3}).timeout == 3.0
    with pytest.raises(anyqueue.ConfigError, match="'retries'.*expected int"):
        parse_options(Options, {}, {"retries": "7"})
    with pytest.raises(anyqueue.ConfigError, match="'tls'"):
        parse_options(Options, {}, {"tls": 1})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"retries": "many"}, "'retries'"),
        ({"tls": "maybe"}, "boolean"),
        ({"mode": "fast"}, "'classic', 'quorum'"),
        ({"colour": "red"}, "unknown option 'colour'.*knows: api_secret, mode"),
    ],
)
def test_bad_options_name_the_problem(query: dict[str, str], message: str) -> None:
    with pytest.raises(anyqueue.ConfigError, match=message):
        parse_options(Options, query, {})


def test_secret_option_values_never_appear_in_errors() -> None:
    with pytest.raises(anyqueue.ConfigError) as raised:
        parse_options(Options, {}, {"api_secret": 12345})
    assert "12345" not in str(raised.value)
    assert secret_values(Options(api_secret="hunter22")) == ["hunter22"]


def test_url_password_is_redacted_everywhere() -> None:
    url = BrokerURL.parse(
        "amqp://guest:s3cr%40t@rabbit.example:5671/vhost?heartbeat=10&secret_key=abc"
    )
    assert url.password == "s3cr@t" and url.username == "guest" and url.port == 5671
    for shown in (str(url), repr(url), url.redacted()):
        assert "s3cr" not in shown and "abc" not in shown and "***" in shown
    assert (
        url.redacted() == "amqp://guest:***@rabbit.example:5671/vhost?heartbeat=10&secret_key=***"
    )
    assert set(url.secrets()) == {"s3cr@t", "abc"}
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert scrub("failed for s3cr%40t and s3cr@t", url.secrets()) == "failed for *** and ***"


def test_malformed_urls() -> None:
    with pytest.raises(anyqueue.ConfigError, match="expected SCHEME://"):
        BrokerURL.parse("localhost:6379")
    with pytest.raises(anyqueue.ConfigError) as raised:
        BrokerURL.parse("redis://user:hunter2@host:notaport/0")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(anyqueue.ConfigError, match="twice"):
        BrokerURL.parse("memory://?a=1&a=2")
