"""Runs the suite on URLs in-process: `conformance_matrix` returns the matrix (`anyqueue compare`
uses it), `run_conformance` prints it (`anyqueue conformance URL...`)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import pytest

from .matrix import Matrix
from .suite import CAPABILITIES


class SuiteDidNotRun(RuntimeError):
    """pytest stopped before it reported any case (a usage error, an import error)."""


def conformance_matrix(
    urls: list[str],
    *,
    pytest_args: list[str] | None = None,
    scale: float = 1.0,
    time_scale: float = 1.0,
    quiet: bool = False,
) -> Matrix:
    """Run the suite against each URL in this process and return the matrix.

    quiet: pytest writes to stderr and leaves out its summary (the matrix table with it), so
    stdout carries only what the caller prints. Raises SuiteDidNotRun when pytest wrote no
    report."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "matrix.json"
        args = ["--pyargs", "anyqueue_conformance", "-p", "no:cacheprovider", "-q"]
        args += ["--anyqueue-report", str(report), "-o", "console_output_style=classic"]
        args += [f"--anyqueue-scale={scale}", f"--anyqueue-time-scale={time_scale}"]
        for url in urls:
            args += ["--anyqueue-url", url]
        if quiet:
            args += ["--no-summary", "-qq"]
        with contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext():
            pytest_exit = pytest.main(args + list(pytest_args or []))
        if not report.exists():
            raise SuiteDidNotRun(
                f"the conformance suite did not run (pytest exit {int(pytest_exit)})"
            )
        return Matrix.from_json(report.read_text(), CAPABILITIES)


def run_conformance(
    urls: list[str],
    *,
    output_format: str = "table",
    pytest_args: list[str] | None = None,
    scale: float = 1.0,
    time_scale: float = 1.0,
) -> int:
    """Run the suite against each URL; print the matrix in `output_format` (table, markdown or
    json). Returns 0 when every claimed capability is VERIFIED, 1 on a failure, 3 when some
    claimed capability was UNVERIFIABLE."""
    # with a machine-readable format, stdout carries only the matrix: pytest talks to stderr
    try:
        matrix = conformance_matrix(
            urls,
            pytest_args=pytest_args,
            scale=scale,
            time_scale=time_scale,
            quiet=output_format != "table",
        )
    except SuiteDidNotRun as err:
        print(err, file=sys.stderr)
        return 1
    if output_format == "json":
        print(matrix.to_json())
    elif output_format == "markdown":
        print(matrix.markdown())
    return matrix.exit_code()
