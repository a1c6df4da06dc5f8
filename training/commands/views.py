"""What the `pcam` commands print: their results as rich tables and lines (markup included)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from pcam_core.release import EnsembleRule, Member
    from training.calibrate import MemberCalibration
    from training.cv import CVReport
    from training.data.download import FileCheck
    from training.evaluate import EvaluationReport
    from training.slides.evaluate import SlidesEvaluation
    from training.slides.outputs import SlideSummary
    from training.validate import Verdict
    from training.workdir import WorkDir


def files_table(directory: Path, checks: Sequence[FileCheck]) -> Table:
    """`pcam data verify`: presence and MD5 of every PCam file."""
    table = Table(title=f"PCam files in {directory}")
    for column in ("file", "status", "expected md5", "actual md5"):
        table.add_column(column, overflow="fold")  # names and digests whole, even in a narrow terminal
    for c in checks:
        status = c.status if c.ok else f"[red]{c.status}[/red]"
        table.add_row(c.name, status, c.expected or "", c.actual or "")
    return table


def cv_table(report: CVReport, folds: int) -> Table:
    """`pcam cv`: every member's held-out AUC per fold, and their mean and spread."""
    table = Table(
        title=f"{folds}-fold cross-validation (grouped by {report.grouped_by}), held-out AUC",
        caption=f"research use only; data: {report.data_source}",
    )
    table.add_column("member")
    for number in range(1, folds + 1):
        table.add_column(f"fold {number}")
    table.add_column("mean ± sd")
    for name, result in report.members.items():
        table.add_row(
            name,
            *(f"{f.held_out_auc:.4f}" for f in result.folds),
            f"{result.mean_auc:.4f} ± {result.std_auc:.4f}",
        )
    return table


def export_lines(reports: Mapping[str, Mapping[str, Any]], work: WorkDir) -> list[str]:
    """`pcam export`: one line per member and format, with parity and the INT8 AUC change and speedup."""
    lines = []
    for name, report in reports.items():
        for fmt, entry in report["formats"].items():
            if "skipped" in entry:
                lines.append(f"{name}: {entry['skipped']}")
                continue
            line = f"{name}: {fmt} {work.member(name) / entry['file']}"
            if "parity_max_abs_diff" in entry:
                line += f" (max |diff| to PyTorch {entry['parity_max_abs_diff']:.2g})"
            if entry.get("auc_delta") is not None:
                line += f" (valid AUC {entry['auc_fp32']:.4f} -> {entry['auc_int8']:.4f}, {entry['auc_delta']:+.4f})"
            if "speedup_batch32" in entry:
                line += f" (speedup over fp32: {_speedup(entry, 32)}, {_speedup(entry, 1)})"
            if entry.get("float_nodes"):
                line += f" (left in float after the pooling: {len(entry['float_nodes'])} node(s))"
            lines.append(line)
    return lines


def _speedup(entry: Mapping[str, Any], batch: int) -> str:
    fp32, int8 = entry[f"fp32_ms_batch{batch}"], entry[f"int8_ms_batch{batch}"]
    return f"x{entry[f'speedup_batch{batch}']:.2f} at batch {batch}, {fp32:.3g} -> {int8:.3g} ms"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(value: float | None, interval: tuple[float, float] | None) -> str:
    shown = "n/a" if value is None else f"{value:.3f}"
    return shown if interval is None else f"{shown} [{interval[0]:.3f}, {interval[1]:.3f}]"


def evaluation(report: EvaluationReport) -> list[Table | str]:
    """`pcam evaluate`/`validate`: members and ensemble, then every operating point with 95 % CIs."""
    title = f"release {report.release_id} on {report.split}: {report.patches} patches, prevalence {report.prevalence:.3f}"
    caption = f"research use only; data: {report.data_source}" + (f" ({report.note})" if report.note else "")
    table = Table(title=title, caption=caption)
    for column in ("model", "temperature", "weight", "AUC", "ECE", "Brier"):
        table.add_column(column)
    for name, m in report.members.items():
        table.add_row(
            name, f"{m.temperature:.3f}", f"{m.weight:g}", _num(m.auc), f"{m.ece:.4f}", f"{m.brier:.4f}"
        )
    table.add_row(
        "ensemble",
        "",
        "",
        _ci(report.auc, report.auc_ci),
        _ci(report.ece, report.ece_ci),
        _ci(report.brier, report.brier_ci),
    )
    plural = {"slide": "slides", "patch": "patches"}.get(report.bootstrap, report.bootstrap)
    units = f"{report.bootstrap_units} {report.bootstrap if report.bootstrap_units == 1 else plural}"
    points = Table(title=f"operating points (95 % CI, bootstrap of {units})")
    for column in ("name", "threshold", "sensitivity", "specificity", "PPV", "NPV", "accuracy", "kappa"):
        points.add_column(column)
    for name, p in report.operating_points.items():
        points.add_row(
            name,
            f"{p.threshold:.4f}",
            _ci(p.sensitivity, p.sensitivity_ci),
            _ci(p.specificity, p.specificity_ci),
            _ci(p.ppv, p.ppv_ci),
            _ci(p.npv, p.npv_ci),
            _ci(p.accuracy, p.accuracy_ci),
            _ci(p.kappa, p.kappa_ci),
        )
    sets = []
    if report.conformal is not None:
        c = report.conformal
        sets = [
            f"prediction sets (fitted for {c.target_coverage:.0%} coverage): coverage "
            f"{_ci(c.coverage, c.coverage_ci)}, both labels in {c.both_labels_share:.1%} of sets"
        ]
    return [table, points, *sets, *([f"[yellow]{report.note}[/yellow]"] if report.note else [])]


def verdict_lines(result: Verdict, notes: Sequence[str]) -> list[str]:
    """`pcam validate`: the answer (green when met, red when not), its reasons, then the caveats."""
    color = "green" if result.met else "red"
    return [
        f"[bold {color}]{result.statement[0]}[/bold {color}]",
        *result.statement[1:],
        *(f"[yellow]{note}[/yellow]" for note in notes),
    ]


def summary(
    members: Mapping[str, Member | MemberCalibration], ensemble: EnsembleRule, title: str = "validation"
) -> list[Table]:
    """Validation metrics per member and of the ensemble, and the operating points."""
    table = Table(title=title)
    for column in ("member", "temperature", "AUC", "NLL before", "NLL after", "ECE after"):
        table.add_column(column)
    for name, m in members.items():
        metrics = m.metrics
        table.add_row(
            name,
            f"{m.temperature:.3f}",
            *(f"{metrics[k]:.4f}" for k in ("auc", "nll_before", "nll_after", "ece_after")),
        )
    table.add_row(
        "ensemble",
        "",
        f"{ensemble.metrics['auc']:.4f}",
        "",
        f"{ensemble.metrics['nll']:.4f}",
        f"{ensemble.metrics['ece_after']:.4f}",
    )
    points = Table(title="operating points")
    for column in ("name", "threshold", "sensitivity", "specificity"):
        points.add_column(column)
    for name, p in ensemble.operating_points.items():
        points.add_row(name, f"{p.threshold:.4f}", f"{p.sensitivity:.3f}", f"{p.specificity:.3f}")
    return [table, points]


def slide_summary(summary: SlideSummary) -> Table:
    """`pcam slide predict`: one slide's summary at its operating point."""
    table = Table(title=summary.slide, caption=f"release {summary.release}; {summary.research_use}")
    table.add_column("")
    table.add_column("")
    rows = [
        ("operating point", f"{summary.operating_point} (threshold {summary.threshold:.4f})"),
        (
            "read at",
            f"{summary.target_mpp} um/px from level {summary.level} ({summary.level0_mpp:.4g} um/px)",
        ),
        ("tissue cells", f"{summary.tissue_cells} of {summary.stride} px"),
        ("tumor cells", str(summary.tumor_cells)),
        (
            "tumor area",
            f"{summary.tumor_area_mm2:.3f} mm2 in {summary.regions} regions (largest {summary.largest_region_mm2:.3f})",
        ),
        ("max probability", "-" if summary.max_probability is None else f"{summary.max_probability:.4f}"),
        ("flagged", f"{summary.flagged_fraction:.1%}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def slide_evaluation(report: SlidesEvaluation) -> Table:
    """`pcam slide evaluate`: per slide cell AUC and lesions, and Camelyon16's FROC over all."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    caption = (
        f"cell AUC (pooled) {number(report.cell_auc)}; FROC score {number(report.froc_score)} "
        f"(sensitivity at {', '.join(f'{k}: {v:.3f}' for k, v in report.froc_sensitivities.items()) or '-'} "
        f"FPs per slide); {report.research_use}"
    )
    table = Table(title="slides against their annotations", caption=caption)
    for column in ("slide", "annotations", "scored cells", "tumor cells", "cell AUC", "lesions (ITC)", "found",
                   "false positives"):  # fmt: skip
        table.add_column(column)
    for s in report.slides:
        table.add_row(
            s.slide, s.annotations or "none: no tumor", str(s.scored_cells), str(s.tumor_cells), number(s.cell_auc),
            f"{s.lesions} ({s.isolated_tumor_cells})", str(s.lesions_found), str(s.false_positives),
        )  # fmt: skip
    return table
