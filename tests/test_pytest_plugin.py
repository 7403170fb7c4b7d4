"""The users' pytest plugin (anyqueue/pytest_plugin.py), run for real with pytester.

Each test writes a small test suite of an imaginary application, runs pytest on it in this
process (the plugin is loaded through its entry point, as in a user's project) and reads the
outcome and the terminal output.
"""

from __future__ import annotations

import uuid

import pytest

pytest_plugins = ["pytester"]

PASSWORD = "hunter2-plugin-secret"

APP_TESTS = """
import anyqueue


def test_round_trip(broker, anyqueue_url, request):
    # the fixture is connected to the URL this parametrization names
    assert broker.url == request.node.callspec.id
    broker.declare("orders", group="billing")
    broker.publish("orders", b"order 1")
    with broker.subscribe("orders", group="billing") as subscription:
        message = subscription.receive(timeout=5)
    assert message is not None and message.body == b"order 1"
    message.ack()


def test_capabilities(broker):
    assert broker.capabilities.ordering == "global"
"""


@pytest.fixture
def namespace() -> str:
    """A prefix for memory:// namespaces private to one test."""
    return f"plugin-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def no_url_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests decide $ANYQUEUE_URL themselves; the caller's must not leak in."""
    monkeypatch.delenv("ANYQUEUE_URL", raising=False)


def test_each_url_runs_every_test_once(pytester: pytest.Pytester, namespace: str) -> None:
    pytester.makepyfile(test_app=APP_TESTS)
    first, second = f"memory://{namespace}-a", f"memory://{namespace}-b"
    result = pytester.runpytest("-v", "--anyqueue-url", first, "--anyqueue-url", second)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines_random(
        [
            f"*test_app.py::test_round_trip[[]{first}[]] PASSED*",
            f"*test_app.py::test_round_trip[[]{second}[]] PASSED*",
            f"*test_app.py::test_capabilities[[]{first}[]] PASSED*",
            f"*test_app.py::test_capabilities[[]{second}[]] PASSED*",
        ]
    )


def test_without_the_option_the_broker_is_memory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_round_trip[[]memory://[]] PASSED*"])


def test_without_the_option_anyqueue_url_from_the_environment_wins(
    pytester: pytest.Pytester, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYQUEUE_URL", f"memory://{namespace}")
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*test_round_trip[[]memory://{namespace}[]] PASSED*"])
    assert "[memory://]" not in result.stdout.str()


def test_the_option_wins_over_the_environment(
    pytester: pytest.Pytester, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYQUEUE_URL", f"memory://{namespace}-env")
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-v", "--anyqueue-url", f"memory://{namespace}-option")
    result.assert_outcomes(passed=2)
    assert f"{namespace}-env" not in result.stdout.str()


def test_a_password_shows_nowhere(pytester: pytest.Pytester, namespace: str) -> None:
    """Ids, --setup-show, a failed assertion on the URL and a connect error all show `***`."""
    pytester.makepyfile(
        test_app="""
        def test_uses_the_url(anyqueue_url):
            assert anyqueue_url.startswith("nope://")

        def test_uses_the_broker(broker):
            pass
        """
    )
    # memory:// refuses credentials: connecting fails, as a mistyped URL would
    with_password = f"memory://bob:{PASSWORD}@{namespace}"
    listing = pytester.runpytest("--collect-only", "-q", "--anyqueue-url", with_password)
    listing.stdout.fnmatch_lines(
        [f"test_app.py::test_uses_the_url[[]memory://bob:***@{namespace}[]]"]
    )
    result = pytester.runpytest(
        "-v", "-rA", "--setup-show", "--anyqueue-url", with_password, "--anyqueue-url",
        f"memory://{namespace}",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=2, errors=1)
    output = result.stdout.str() + result.stderr.str()
    assert "bob:***@" in output
    assert "memory URLs are memory:// or memory://NAME" in output  # the connect error is shown
    assert PASSWORD not in output
    assert PASSWORD not in listing.stdout.str() + listing.stderr.str()


def test_the_broker_is_closed_after_each_test(pytester: pytest.Pytester, namespace: str) -> None:
    pytester.makeconftest(
        """
        import pytest

        CLOSED = pytest.StashKey[list]()

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_teardown(item, nextitem):
            broker = item.funcargs.get("broker")
            yield
            if broker is not None:
                item.config.stash.setdefault(CLOSED, []).append((item.name, broker.closed))

        def pytest_terminal_summary(terminalreporter, config):
            for name, closed in config.stash.get(CLOSED, []):
                terminalreporter.write_line(f"after {name}: closed={closed}")
        """
    )
    pytester.makepyfile(
        test_app="""
        def test_passes(broker):
            assert not broker.closed

        def test_fails(broker):
            raise AssertionError("the application broke")
        """
    )
    result = pytester.runpytest(
        "--anyqueue-url", f"memory://{namespace}-a", "--anyqueue-url", f"memory://{namespace}-b"
    )
    result.assert_outcomes(passed=2, failed=2)
    lines = [line for line in result.stdout.lines if line.startswith("after ")]
    assert len(lines) == 4
    assert all(line.endswith("closed=True") for line in lines), lines
