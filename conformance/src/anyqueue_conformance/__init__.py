"""anyqueue's conformance suite: proves what each backend claims about ordering, durability and
redelivery. Subclass `ConformanceSuite` with a `harness` fixture, or run
`pytest --pyargs anyqueue_conformance --anyqueue-url URL`, or `anyqueue conformance URL`."""

from .harness import Harness, Unverifiable, harness_for
from .suite import CAPABILITIES, ConformanceSuite

__all__ = ["CAPABILITIES", "ConformanceSuite", "Harness", "Unverifiable", "harness_for"]
