"""`anyqueue compare`: the real conformance suite and benchmark on memory:// namespaces.

Counts and waits are scaled down to keep the run short; no assertion is about speed. The suite
runs in this process (as the command does), so a conformance case may FAIL on a loaded machine:
the tests check the shape of the comparison and the outcomes that cannot depend on timing.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from click.testing import CliRunner, Result

import anyqueue.compare
from anyqueue import bench
from anyqueue.cli import cli
from anyqueue.compare import Comparison, ConformanceUnavailable, column_titles, compare

conformance = pytest.importorskip("anyqueue_conformance")
from anyqueue_conformance.matrix import (  # noqa: E402
    FAIL,
    UNCLAIMED,
    UNVERIFIABLE,
    VERIFIED,
    CaseResult,
    Matrix,
)

OUTCOMES = {VERIFIED, FAIL, UNCLAIMED, UNVERIFIABLE}
PASSWORD = "hunter2-compare-secret"
FIGURE_LABELS = [label for label, _ in anyqueue.compare.FIGURE_ROWS]


def _namespace() -> str:
    return f"memory://compare-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def urls() -> list[str]:
    return [_namespace(), _namespace()]


@pytest.fixture(scope="module")
def comparison(urls: list[str]) -> Comparison:
    """The whole suite and a small benchmark on two namespaces, once for this module."""
    return compare(urls, messages=200, requests=10, scale=0.2, time_scale=0.5)


def _cells(line: str) -> list[str]:
    """The cells of a text table line: separated by two spaces or more (a label may hold one)."""
    return re.split(r"\s{2,}", line.strip())


# -- the text table ----------------------------------------------------------------------------
def test_table_has_a_column_per_url(comparison: Comparison, urls: list[str]) -> None:
    header, rule, *_ = comparison.table().splitlines()
    assert header.split() == urls
    assert len(rule.split()) == 3  # the label column and one per URL


def test_table_has_a_row_per_capability(comparison: Comparison) -> None:
    lines = comparison.table().splitlines()
    assert lines[2] == "conformance"
    rows = {cells[0]: cells[1:] for cells in map(_cells, lines) if len(cells) == 3}
    for capability in conformance.CAPABILITIES:
        assert capability in rows, f"no row for {capability}"
        assert set(rows[capability]) <= OUTCOMES
    # what memory:// cannot get wrong by being slow
    for capability in ("round_trip", "bodies", "headers", "invalid_name"):
        assert rows[capability] == [VERIFIED, VERIFIED]
    assert rows["durable"] == [UNCLAIMED, UNCLAIMED]  # memory:// claims no durability


def test_table_has_the_bench_figures(comparison: Comparison) -> None:
    lines = comparison.table().splitlines()
    section = next(i for i, line in enumerate(lines) if line.startswith("bench ("))
    assert "200 messages of 100 bytes, 10 sequential requests" in lines[section]
    figure_rows = {cells[0]: cells[1:] for cells in map(_cells, lines[section + 1 :])}
    for label in FIGURE_LABELS:
        cells = figure_rows[label]
        assert len(cells) == 2
        assert all(float(cell.replace(",", "")) > 0 for cell in cells), (label, cells)
    # memory:// ships no raw-client baseline: no baseline or ratio rows
    assert not any("baseline" in line or "ratio" in line for line in lines[section:])


# -- Markdown and JSON -------------------------------------------------------------------------
def test_markdown_is_one_table_with_a_column_per_url(
    comparison: Comparison, urls: list[str]
) -> None:
    lines = comparison.markdown().splitlines()
    table = [line for line in lines if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert all(len(row) == 3 for row in rows), "every row has a label and one cell per URL"
    assert rows[0] == ["", *urls]
    assert set(table[1].strip("|").split("|")) == {"---"}
    by_label = {row[0]: row[1:] for row in rows[2:]}
    assert by_label["**conformance**"] == ["", ""]
    for capability in conformance.CAPABILITIES:
        assert set(by_label[capability]) <= OUTCOMES
    for label in FIGURE_LABELS:
        assert all(float(cell.replace(",", "")) > 0 for cell in by_label[label])


def test_json_has_every_capability_and_figure_per_url(
    comparison: Comparison, urls: list[str]
) -> None:
    data = json.loads(comparison.to_json())
    assert data["urls"] == urls
    assert data["capabilities"] == conformance.CAPABILITIES
    assert [column["url"] for column in data["columns"]] == urls
    for column in data["columns"]:
        assert list(column["conformance"]) == conformance.CAPABILITIES
        assert set(column["conformance"].values()) <= OUTCOMES
        assert column["conformance_error"] is None
        failed = {name for name, outcome in column["conformance"].items() if outcome == FAIL}
        assert {failure["capability"] for failure in column["failures"]} == failed
        assert column["bench"]["error"] is None
        assert set(column["bench"]["anyqueue"]) >= set(bench.FIGURES)
    assert data["exit_code"] == (1 if data["problems"] else 0)


def test_render_picks_the_format(comparison: Comparison) -> None:
    assert comparison.render("table") == comparison.table()
    assert comparison.render("markdown") == comparison.markdown()
    assert json.loads(comparison.render("json")) == comparison.to_dict()
    with pytest.raises(ValueError, match="unknown format"):
        comparison.render("html")


# -- failures ----------------------------------------------------------------------------------
def test_a_failing_url_fails_the_comparison_without_showing_its_password() -> None:
    good, bad = _namespace(), f"nosuch://bob:{PASSWORD}@somewhere"
    result = compare([good, bad], messages=50, requests=2, pytest_args=["-k", "round_trip"])
    assert result.exit_code() == 1
    assert result.titles == [good, "nosuch://bob:***@somewhere"]
    assert result.matrix.cell("round_trip", good) == VERIFIED
    assert result.matrix.cell("round_trip", result.titles[1]) == FAIL
    assert result.bench[0].error is None
    assert result.bench[1].error is not None
    [problem] = result.problems()
    assert problem.startswith("nosuch://bob:***@somewhere: ")
    assert "FAILED" in problem and "bench run failed" in problem
    table = result.table()
    assert "failed" in table  # the bench cells of the failed URL
    assert any(line.startswith("note: FAIL nosuch://") for line in table.splitlines())
    for text in (table, result.markdown(), result.to_json()):
        assert PASSWORD not in text
        assert "no backend for nosuch://" in text  # the reason is shown


def test_unverifiable_and_unclaimed_do_not_fail_a_comparison() -> None:
    title = "memory://x"
    cases = [
        CaseResult(title, "round_trip", "test_round_trip", VERIFIED),
        CaseResult(title, "durable", "test_durable", UNVERIFIABLE, "no restart hook"),
        CaseResult(title, "wildcards", "test_wildcards", UNCLAIMED),
    ]
    passing = Comparison([title], Matrix(cases, conformance.CAPABILITIES))
    assert passing.exit_code() == 0
    assert passing.problems() == []
    failing_case = CaseResult(title, "ack", "test_ack", FAIL, "E   AssertionError: lost 3\nmore")
    failing = Comparison([title], Matrix([*cases, failing_case], conformance.CAPABILITIES))
    assert failing.exit_code() == 1
    assert failing.problems() == ["memory://x: 1 capability FAILED"]
    assert "note: FAIL memory://x test_ack: AssertionError: lost 3" in failing.table()


def test_column_titles_are_redacted_and_unique() -> None:
    titles = column_titles(
        [f"redis://:{PASSWORD}@h:6379/0", "redis://:other-secret@h:6379/0", "memory://"]
    )
    assert titles == ["redis://:***@h:6379/0", "redis://:***@h:6379/0 (2)", "memory://"]


def test_without_the_suite_compare_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "anyqueue_conformance" else real_find_spec(name, *a),
    )
    with pytest.raises(ConformanceUnavailable, match=r"pip install 'anyqueue\[conformance\]'"):
        compare([_namespace()], messages=10, requests=1)


# -- the command -------------------------------------------------------------------------------
def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_command_help() -> None:
    result = invoke("compare", "--help")
    assert result.exit_code == 0
    for option in ("--format", "--messages", "--requests", "--no-baseline", "--scale"):
        assert option in result.output


def test_command_prints_json_on_stdout_and_progress_on_stderr() -> None:
    first, second = _namespace(), _namespace()
    result = invoke(
        "compare", first, second, "--format", "json", "-m", "50", "-r", "2", "--no-baseline",
        "--", "-k", "round_trip or headers",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but the JSON document
    assert data["urls"] == [first, second]
    for column in data["columns"]:
        assert column["conformance"] == {"round_trip": VERIFIED, "headers": VERIFIED}
        assert column["bench"]["messages"] == 50
    assert f"conformance suite on {first}" in result.stderr
    assert f"bench on {second}" in result.stderr


def test_command_exits_1_with_one_line_naming_the_failed_url() -> None:
    good = _namespace()
    result = invoke(
        "compare", good, f"nosuch://bob:{PASSWORD}@h", "-m", "20", "-r", "1",
        "--format", "markdown", "--", "-k", "round_trip",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.startswith(f"|  | {good} | nosuch://bob:***@h |")
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == ["error: nosuch://bob:***@h: 1 capability FAILED, the bench run failed"]
    assert PASSWORD not in result.output
