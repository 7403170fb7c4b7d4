"""pytest plugin: `--anyqueue-url URL` (repeatable) parametrizes a `broker` fixture, so an
application's own tests run against every backend the user cares about.

    def test_order_flow(broker):          # runs once per --anyqueue-url
        broker.declare("orders", group="billing")
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import anyqueue
from anyqueue.config import redact_url


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anyqueue")
    group.addoption(
        "--anyqueue-url",
        action="append",
        default=[],
        metavar="URL",
        help="broker URL for the `broker` fixture; repeat to run against several backends "
        "(default: $ANYQUEUE_URL, else memory://)",
    )


def anyqueue_urls(config: pytest.Config) -> list[str]:
    """The URLs given with --anyqueue-url, else $ANYQUEUE_URL, else memory://."""
    urls: list[str] = config.getoption("anyqueue_url") or []
    return urls or [os.environ.get("ANYQUEUE_URL") or "memory://"]


class RedactedURL(str):
    """A broker URL that shows as its redacted form wherever pytest prints a value by repr
    (`--setup-show`, `-l`, assertion explanations); it is still the full URL as a string."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyqueue_url" in metafunc.fixturenames:
        urls = [RedactedURL(url) for url in anyqueue_urls(metafunc.config)]
        metafunc.parametrize(
            "anyqueue_url", urls, ids=[redact_url(url) for url in urls], scope="session"
        )


@pytest.fixture
def broker(anyqueue_url: str) -> Iterator[anyqueue.Broker]:
    """A connected Broker, once per --anyqueue-url; closed after the test."""
    with anyqueue.connect(anyqueue_url) as connected:
        yield connected
