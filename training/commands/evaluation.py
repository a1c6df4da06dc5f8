"""`pcam evaluate` and `pcam validate`: a repository evaluated on a split, its report written, the
clinical targets judged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.evaluate import EvaluationReport
from training.evaluate import evaluate as run_evaluation
from training.report import write_report
from training.validate import Verdict, caveats, operating_point_name
from training.validate import verdict as judge


@dataclass(frozen=True)
class Evaluated:
    """An evaluation and the report.md written for it (None when no report dir was asked for)."""

    report: EvaluationReport
    markdown: Path | None = None


@dataclass(frozen=True)
class Validated:
    """An evaluation judged against the clinical targets, with the caveats that go with the answer."""

    report: EvaluationReport
    verdict: Verdict
    notes: list[str]
    markdown: Path | None = None


def evaluate(
    repository: Path,
    data: Path,
    split: str,
    workdir: Path | None,
    threads: int,
    output: Path | None = None,
    report_dir: Path | None = None,
) -> Evaluated:
    """Evaluate with the serving rules; the report as JSON to output and as report.md + figures to report_dir."""
    report = run_evaluation(repository, data, split, workdir, threads)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report.model_dump_json(indent=2) + "\n")
    markdown = write_report(report, report_dir)["markdown"] if report_dir is not None else None
    return Evaluated(report, markdown)


def validate(
    repository: Path,
    data: Path,
    split: str,
    operating_point: str,
    require_ci: bool,
    workdir: Path | None,
    threads: int,
    report_dir: Path | None = None,
) -> Validated:
    """Evaluate, then judge the clinical targets at operating_point (an unknown name fails before evaluating)."""
    point = operating_point_name(operating_point)  # before the slow part
    report = run_evaluation(repository, data, split, workdir, threads)
    notes = caveats(report, require_ci)
    result = judge(report, point, require_ci)
    markdown = write_report(report, report_dir, result)["markdown"] if report_dir is not None else None
    return Validated(report, result, notes, markdown)
