"""mkdocs hook: replaces `<!-- conformance-matrix: NAME -->` with the matrix of a real run.

The test command (`scripts/test-all`) runs every backend's conformance suite with
`--anyqueue-report build/conformance.json`; this hook turns that report into tables, so the
matrices in the docs are never typed by hand. NAME is a backend (its URL schemes' columns) or
`all`. Without a report the page says how to produce one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from anyqueue.plugins import backends
from anyqueue_conformance import CAPABILITIES
from anyqueue_conformance.matrix import Matrix

REPORT = Path(os.environ.get("ANYQUEUE_CONFORMANCE_REPORT", "build/conformance.json"))
PLACEHOLDER = re.compile(r"<!-- conformance-matrix: ([a-z0-9_-]+) -->")


def _table(name: str) -> str:
    if not REPORT.exists():
        return (
            '!!! note "Matrix not generated in this build"\n'
            "    Run `./scripts/test-all` first: it writes `build/conformance.json` from a real\n"
            "    run of the conformance suite against every backend, which this page shows.\n"
        )
    matrix = Matrix.from_json(REPORT.read_text(), CAPABILITIES)
    if name != "all":
        schemes = next((spec.schemes for spec in backends() if spec.name == name), (name,))
        kept = [r for r in matrix.results if r.url.split("://")[0] in schemes]
        matrix = Matrix(kept, CAPABILITIES)
    if not matrix.results:
        return f"*No conformance results for `{name}` in `{REPORT}`.*\n"
    return (
        matrix.markdown() + "\n\n*Generated from the conformance run in `" + str(REPORT) + "`.*\n"
    )


def on_page_markdown(markdown: str, **_: Any) -> str:
    return PLACEHOLDER.sub(lambda match: _table(match.group(1)), markdown)
