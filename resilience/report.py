"""The verdict of a resilience scenario and where its figures go (build/chaos/)."""

from dataclasses import dataclass, field
from pathlib import Path

OUTPUT_DIR = Path("build/chaos")


@dataclass(frozen=True)
class Verdict:
    """The bars a run missed, one message each; none missed: passed."""

    missed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missed

    def summary(self) -> str:
        return "pass" if self.passed else "FAIL: " + "; ".join(self.missed)
