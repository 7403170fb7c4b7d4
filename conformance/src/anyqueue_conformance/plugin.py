"""pytest plugin: records each conformance case's outcome and prints the matrix at the end.

Options: --anyqueue-scale / --anyqueue-time-scale (message counts and waits for the plain
harness), --anyqueue-report PATH (the matrix as JSON). `--anyqueue-url` comes from anyqueue's
own pytest plugin.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from anyqueue.config import redact_url

from .matrix import CaseResult, Matrix, outcome_of

_RESULTS = pytest.StashKey[list[CaseResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anyqueue-conformance")
    group.addoption("--anyqueue-scale", type=float, default=1.0, help="multiply message counts")
    group.addoption("--anyqueue-time-scale", type=float, default=1.0, help="multiply waits")
    group.addoption("--anyqueue-report", metavar="PATH", help="write the matrix as JSON")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


def _url_of(item: pytest.Item) -> str:
    harness = getattr(item, "funcargs", {}).get("harness")
    if harness is not None:
        return str(harness.label)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "anyqueue_url" in callspec.params:
        return redact_url(callspec.params["anyqueue_url"])
    cls = getattr(item, "cls", None)
    return cls.__name__ if cls else "?"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    capability = getattr(getattr(item, "function", None), "_anyqueue_capability", None)
    if capability is None:
        return report
    # one record per test: the call phase, or setup when it did not get that far
    failed_setup = report.when == "setup" and report.outcome != "passed"
    if report.when == "call" or failed_setup:
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        detail = reason or (_failure_message(report) if report.failed else "")
        item.config.stash[_RESULTS].append(
            CaseResult(
                _url_of(item), capability, item.name, outcome_of(report.outcome, reason), detail
            )
        )
    return report


def _failure_message(report: pytest.TestReport) -> str:
    """The exception line of a failure (`AssertionError: 3 messages were lost`), not the first
    line of its traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(crash.message) if crash is not None else str(report.longrepr)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    from .suite import CAPABILITIES

    matrix = Matrix(results, CAPABILITIES)
    terminalreporter.section("anyqueue conformance matrix")
    terminalreporter.write_line(matrix.table())
    path = config.getoption("anyqueue_report")
    if path:
        Path(path).write_text(matrix.to_json())
