"""What every resilience scenario shares: its command line's common options, its verdict, and where
its figures go (build/chaos/)."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_DIR = Path("build/chaos")


def scenario_parser(doc: str | None) -> argparse.ArgumentParser:
    """A scenario's argument parser with the release and Triton environment it runs the stack on."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-venv", type=Path, default=ROOT / ".venv-triton")
    return parser


@dataclass(frozen=True)
class Verdict:
    """The bars a run missed, one message each; none missed: passed."""

    missed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missed

    def summary(self) -> str:
        return "pass" if self.passed else "FAIL: " + "; ".join(self.missed)
