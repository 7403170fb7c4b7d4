"""The conformance matrix: per capability and URL, VERIFIED / FAIL / UNCLAIMED / UNVERIFIABLE."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

VERIFIED, FAIL, UNCLAIMED, UNVERIFIABLE = "VERIFIED", "FAIL", "UNCLAIMED", "UNVERIFIABLE"
# when a capability has several cases, the worst outcome names the row
_SEVERITY = {FAIL: 3, UNVERIFIABLE: 2, UNCLAIMED: 1, VERIFIED: 0}


@dataclass
class CaseResult:
    url: str
    capability: str
    case: str
    outcome: str
    detail: str = ""


def outcome_of(report_outcome: str, skip_reason: str) -> str:
    """Map a pytest outcome (and skip reason) to a matrix outcome; other skips count as FAIL,
    so nothing is ever skipped silently."""
    if report_outcome == "passed":
        return VERIFIED
    if report_outcome == "skipped":
        for label in (UNCLAIMED, UNVERIFIABLE):
            if label in skip_reason:
                return label
    return FAIL


class Matrix:
    def __init__(self, results: list[CaseResult], capabilities: list[str]) -> None:
        self.results = results
        self.urls = list(dict.fromkeys(r.url for r in results))
        seen = {r.capability for r in results}
        self.capabilities = [c for c in capabilities if c in seen] + sorted(
            seen - set(capabilities)
        )

    def cell(self, capability: str, url: str) -> str:
        outcomes = [r.outcome for r in self.results if r.capability == capability and r.url == url]
        if not outcomes:
            return "-"
        return max(outcomes, key=lambda o: _SEVERITY[o])

    def exit_code(self) -> int:
        """0 when every claimed capability is VERIFIED; 1 on any FAIL; 3 when some claimed
        capability could not be verified (UNVERIFIABLE) but nothing failed."""
        outcomes = {r.outcome for r in self.results}
        if FAIL in outcomes or not self.results:
            return 1
        return 3 if UNVERIFIABLE in outcomes else 0

    def table(self) -> str:
        headers = ["capability", *self.urls]
        rows = [[c, *(self.cell(c, u) for u in self.urls)] for c in self.capabilities]
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

        def line(cells: list[str]) -> str:
            return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()

        out = [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
        failures = [r for r in self.results if r.outcome == FAIL]
        for result in failures:
            first_line = result.detail.splitlines()[0] if result.detail else ""
            out.append(f"FAIL {result.url} {result.case}: {first_line}")
        return "\n".join(out)

    def markdown(self) -> str:
        lines = ["| capability | " + " | ".join(self.urls) + " |"]
        lines.append("|---" * (len(self.urls) + 1) + "|")
        for capability in self.capabilities:
            cells = [self.cell(capability, url) for url in self.urls]
            lines.append(f"| {capability} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        summary: dict[str, dict[str, str]] = defaultdict(dict)
        for capability in self.capabilities:
            for url in self.urls:
                summary[url][capability] = self.cell(capability, url)
        return json.dumps({"matrix": summary, "cases": [asdict(r) for r in self.results]}, indent=2)

    @classmethod
    def from_json(cls, text: str, capabilities: list[str]) -> Matrix:
        data = json.loads(text)
        return cls([CaseResult(**case) for case in data["cases"]], capabilities)
