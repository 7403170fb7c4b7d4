"""`anyqueue compare`: the conformance matrix and the bench figures of several URLs side by side.

One column per URL (its redacted form), as a text table, Markdown or JSON. The conformance
suite runs once per URL (`anyqueue_conformance.runner.conformance_matrix`), so two URLs of one
backend on different hosts stay two columns; then `anyqueue.bench.run` measures each URL (and
its raw-client baseline). A comparison fails (`exit_code() == 1`) when any conformance case
FAILed, the suite could not run for a URL, or a bench run failed; UNVERIFIABLE and UNCLAIMED
cells are shown but do not fail it (`anyqueue conformance` gives that strict verdict).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import bench
from .config import BrokerURL, redact_url, scrub
from .errors import Error

if TYPE_CHECKING:
    # anyqueue-conformance ships no py.typed marker (yet): its names are Any to mypy
    from anyqueue_conformance.matrix import (  # type: ignore[import-untyped, unused-ignore]
        CaseResult,
        Matrix,
    )

#: what a matrix cell holds when no case of that capability ran for the URL
NOT_RUN = "-"

#: (label, bench figure) rows, in the order `anyqueue bench` shows them
FIGURE_ROWS = tuple((title, name) for name, title in bench.COLUMNS)

#: makes a progress callback for benchmarking one URL (given its column title)
BenchProgress = Callable[[str], AbstractContextManager[bench.Progress]]


class ConformanceUnavailable(Error):
    """The conformance suite (anyqueue-conformance) is not installed or too old."""


@contextmanager
def _no_bench_progress(title: str) -> Iterator[bench.Progress]:
    yield lambda phase, steps: None


def _say_nothing(line: str) -> None:
    pass


@dataclass
class Comparison:
    """Conformance outcomes and bench figures for each URL, ready to print.

    `titles` name the columns (redacted URLs, made unique); `matrix` holds every conformance
    case with its `url` set to the column title; `bench` has one result per column, or is
    empty when the benchmark was not run.
    """

    titles: list[str]
    matrix: Matrix
    bench: list[bench.BenchResult] = field(default_factory=list)
    #: column title → why the conformance suite did not run there
    conformance_errors: dict[str, str] = field(default_factory=dict)

    # -- verdict ---------------------------------------------------------------------------
    def failed_cases(self) -> list[CaseResult]:
        """The conformance cases that FAILed (CaseResult records), in run order."""
        return [result for result in self.matrix.results if result.outcome == "FAIL"]

    def problems(self) -> list[str]:
        """What makes this comparison fail, one short phrase per column with a problem."""
        found = []
        failed_by_title: dict[str, set[str]] = {}
        for result in self.failed_cases():
            failed_by_title.setdefault(result.url, set()).add(result.capability)
        for index, title in enumerate(self.titles):
            parts = []
            if title in self.conformance_errors:
                parts.append("the conformance suite did not run")
            if title in failed_by_title:
                count = len(failed_by_title[title])
                parts.append(f"{count} {'capability' if count == 1 else 'capabilities'} FAILED")
            if self.bench and self.bench[index].error:
                parts.append("the bench run failed")
            if parts:
                found.append(f"{title}: {', '.join(parts)}")
        return found

    def exit_code(self) -> int:
        """0 when no conformance case FAILed and every suite and bench run completed, else 1."""
        return 1 if self.problems() else 0

    # -- rows ------------------------------------------------------------------------------
    def _conformance_rows(self) -> list[tuple[str, list[str]]]:
        return [
            (capability, [self.matrix.cell(capability, title) for title in self.titles])
            for capability in self.matrix.capabilities
        ]

    def _bench_rows(self) -> list[tuple[str, list[str]]]:
        """(label, cells) per figure, plus baseline and ratio rows when any URL has a baseline."""
        if not self.bench:
            return []
        with_baseline = any(result.baseline is not None for result in self.bench)
        rows = []
        for title, name in FIGURE_ROWS:
            rows.append((title, [_figure(result, name) for result in self.bench]))
            if with_baseline:
                rows.append((f"{title} baseline", [_baseline(r, name) for r in self.bench]))
                rows.append((f"{title} ratio", [_ratio(r, name) for r in self.bench]))
        return rows

    def _bench_settings(self) -> str:
        if not self.bench:
            return "not run"
        first = self.bench[0]
        return (
            f"{first.messages:,} messages of {first.body_size:,} bytes, "
            f"{first.requests:,} sequential requests per URL"
        )

    def notes(self) -> list[str]:
        """Failures and errors worth a line under the table. Cases of one URL that failed for
        the same reason (a broker that cannot be reached fails them all) share one line."""
        lines = []
        cases_by_reason: dict[tuple[str, str], list[str]] = {}
        for result in self.failed_cases():
            reason = failure_reason(result.detail)
            cases_by_reason.setdefault((result.url, reason), []).append(result.case)
        for (title, reason), cases in cases_by_reason.items():
            more = f" (and {len(cases) - 1} more)" if len(cases) > 1 else ""
            lines.append(f"FAIL {title} {cases[0]}{more}: {reason}".rstrip())
        for title, error in self.conformance_errors.items():
            lines.append(f"{title}: {error}")
        for title, figures in zip(self.titles, self.bench):
            if figures.error:
                lines.append(f"{title}: bench failed: {figures.error}")
            if figures.baseline_error:
                lines.append(f"{title}: baseline failed: {figures.baseline_error}")
        return lines

    # -- output ----------------------------------------------------------------------------
    def table(self) -> str:
        """An aligned text table: a conformance section, then a bench section, then notes."""
        conformance = self._conformance_rows()
        figures = self._bench_rows()
        header = ["", *self.titles]
        body = [[f"  {label}", *cells] for label, cells in conformance + figures]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def line(cells: list[str], numbers: bool = False) -> str:
            first = cells[0].ljust(widths[0])
            rest = [
                cell.rjust(width) if numbers else cell.ljust(width)
                for cell, width in zip(cells[1:], widths[1:])
            ]
            return "  ".join([first, *rest]).rstrip()

        out = [line(header), "  ".join("-" * width for width in widths)]
        out.append("conformance")
        out += [line(row) for row in body[: len(conformance)]]
        out.append(f"bench ({self._bench_settings()})")
        out += [line(row, numbers=True) for row in body[len(conformance) :]]
        if any(result.baseline is not None for result in self.bench):
            out.append("ratio = anyqueue / baseline (throughput: higher is better, latency: lower)")
        out += [f"note: {note}" for note in self.notes()]
        return "\n".join(out)

    def markdown(self) -> str:
        """One Markdown table (a bold row opens each section), then the notes as a list."""
        width = len(self.titles) + 1

        def row(cells: Sequence[str]) -> str:
            return "| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |"

        def section(title: str) -> str:
            return row([f"**{title}**", *([""] * (width - 1))])

        lines = [row(["", *self.titles]), "|---" * width + "|"]
        lines.append(section("conformance"))
        lines += [row([label, *cells]) for label, cells in self._conformance_rows()]
        lines.append(section(f"bench ({self._bench_settings()})"))
        lines += [row([label, *cells]) for label, cells in self._bench_rows()]
        notes = self.notes()
        if notes:
            lines.append("")
            lines += [f"- {_markdown_cell(note)}" for note in notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: one entry per column with its outcomes and bench figures."""
        columns = []
        for index, title in enumerate(self.titles):
            result = self.bench[index] if self.bench else None
            columns.append(
                {
                    "url": title,
                    "conformance": {
                        capability: self.matrix.cell(capability, title)
                        for capability in self.matrix.capabilities
                    },
                    "conformance_error": self.conformance_errors.get(title),
                    "failures": [
                        {"capability": r.capability, "case": r.case, "detail": r.detail}
                        for r in self.failed_cases()
                        if r.url == title
                    ],
                    "bench": result.to_dict() if result is not None else None,
                }
            )
        return {
            "urls": list(self.titles),
            "capabilities": list(self.matrix.capabilities),
            "columns": columns,
            "problems": self.problems(),
            "exit_code": self.exit_code(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self, output_format: str) -> str:
        """The comparison as `table`, `markdown` or `json`."""
        renderers = {"table": self.table, "markdown": self.markdown, "json": self.to_json}
        if output_format not in renderers:
            raise ValueError(f"unknown format {output_format!r}; expected one of {list(renderers)}")
        return renderers[output_format]()


def _figure(result: bench.BenchResult, name: str) -> str:
    if result.error:
        return "failed"
    return bench.format_figure(name, bench.with_combined(result.figures).get(name))


def _baseline(result: bench.BenchResult, name: str) -> str:
    if result.baseline is None:
        return NOT_RUN
    return bench.format_figure(name, bench.with_combined(result.baseline).get(name))


def _ratio(result: bench.BenchResult, name: str) -> str:
    ratio = result.ratios().get(name)
    return NOT_RUN if ratio is None else f"{ratio:.2f}x"


def failure_reason(detail: str) -> str:
    """The line of a pytest failure report that says what went wrong: its first `E ` line
    (the exception), else its first line."""
    lines = detail.splitlines()
    for line in lines:
        if line.startswith("E "):
            return line[1:].strip()
    return lines[0].strip() if lines else ""


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- running -----------------------------------------------------------------------------------
def column_titles(urls: Sequence[str]) -> list[str]:
    """The redacted URLs, numbered where two would otherwise read the same."""
    titles: list[str] = []
    for url in urls:
        title = redact_url(url)
        candidate, number = title, 2
        while candidate in titles:
            candidate, number = f"{title} ({number})", number + 1
        titles.append(candidate)
    return titles


def _runner() -> Any:
    """anyqueue_conformance.runner, or ConformanceUnavailable saying what to install."""
    if importlib.util.find_spec("anyqueue_conformance") is None:
        raise ConformanceUnavailable(
            "the conformance suite is not installed: pip install 'anyqueue[conformance]'"
        )
    runner = importlib.import_module("anyqueue_conformance.runner")
    if not hasattr(runner, "conformance_matrix"):
        raise ConformanceUnavailable(
            "this anyqueue-conformance cannot return a matrix; upgrade it: "
            "pip install -U 'anyqueue[conformance]'"
        )
    return runner


def compare(
    urls: Sequence[str],
    *,
    messages: int = 10_000,
    body_size: int = 100,
    requests: int = 200,
    baseline: bool = True,
    scale: float = 1.0,
    time_scale: float = 1.0,
    pytest_args: Sequence[str] = (),
    announce: Callable[[str], None] = _say_nothing,
    bench_progress: BenchProgress = _no_bench_progress,
) -> Comparison:
    """Run the conformance suite, then the benchmark, against each URL; return the comparison.

    scale / time_scale multiply the suite's message counts and waits; `pytest_args` go to each
    suite run (e.g. `["-k", "ordering"]`). pytest's own output goes to stderr. `announce`
    receives a line as each run starts; `bench_progress(title)` gives the progress callback of
    that URL's bench run. A failing URL is recorded in the comparison, never raised.
    """
    if not urls:
        raise ValueError("compare needs at least one URL")
    for url in urls:
        BrokerURL.parse(url)  # a malformed URL is a ConfigError before anything runs
    runner = _runner()
    matrix_module = importlib.import_module("anyqueue_conformance.matrix")
    capabilities = importlib.import_module("anyqueue_conformance").CAPABILITIES
    titles = column_titles(urls)
    cases = []
    conformance_errors: dict[str, str] = {}
    for url, title in zip(urls, titles):
        announce(f"conformance suite on {title}")
        try:
            url_matrix = runner.conformance_matrix(
                [url],
                pytest_args=list(pytest_args),
                scale=scale,
                time_scale=time_scale,
                quiet=True,
            )
        except runner.SuiteDidNotRun as err:
            conformance_errors[title] = str(err)
            continue
        # one URL per run: every case belongs to this column, whatever label the harness gave;
        # a traceback may show a frame's arguments, a password among them
        secrets = BrokerURL.parse(url).secrets()
        cases += [
            dataclasses.replace(case, url=title, detail=scrub(case.detail, secrets))
            for case in url_matrix.results
        ]
    results = []
    for url, title in zip(urls, titles):
        announce(f"bench on {title}")
        with bench_progress(title) as progress:
            results.append(
                bench.run(
                    url,
                    messages=messages,
                    body_size=body_size,
                    requests=requests,
                    baseline=baseline,
                    progress=progress,
                )
            )
    return Comparison(
        titles, matrix_module.Matrix(cases, capabilities), results, conformance_errors
    )
