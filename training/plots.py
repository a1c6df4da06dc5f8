"""Figures of an evaluation report: ROC curve, reliability diagram, confusion matrices (PNG).

matplotlib is imported inside the functions, and figures are drawn on the Agg canvas without pyplot
(no global state, no display): only `pcam evaluate`/`validate` pay for it, and the services, which
never import training, stay free of it. Every figure's title names the release and, for a synthetic
release, says it is not a PCam result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from training import RESEARCH_USE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from training.evaluate import EvaluationReport

DPI = 120
POINT_MARKERS = {"screening": "o", "balanced": "s", "high_specificity": "^"}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(figure: Figure, report: EvaluationReport, what: str) -> None:
    """Release id, split and the research-use line; the synthetic note in red where it applies."""
    lines = [what, f"release {report.release_id}, {report.split} split, {report.patches} patches"]
    if report.note:
        lines.append(f"WARNING: {report.note}")
    lines.append(RESEARCH_USE)
    figure.suptitle("\n".join(lines), fontsize=9, color="darkred" if report.note else "black")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def roc_figure(report: EvaluationReport, path: Path) -> Path:
    """The ensemble's ROC curve with every operating point marked and the clinical target region."""
    from training.validate import SENSITIVITY_TARGET, SPECIFICITY_TARGET

    if report.roc is None:
        raise ValueError("no ROC curve: the split holds one class only")
    figure = _figure(6.0, 6.4)
    _title(figure, report, "ROC curve of the ensemble")
    ax = figure.add_subplot()
    ax.fill_between(
        [0.0, 1.0 - SPECIFICITY_TARGET], SENSITIVITY_TARGET, 1.0, color="tab:green", alpha=0.15,
        label=f"clinical target (sens >= {SENSITIVITY_TARGET:g}, spec >= {SPECIFICITY_TARGET:g})",
    )  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    auc = "n/a" if report.auc is None else f"{report.auc:.3f}{_ci(report.auc_ci)}"
    ax.plot(report.roc.fpr, report.roc.tpr, color="tab:blue", label=f"ensemble, AUC {auc}")
    for name, p in report.operating_points.items():
        if p.sensitivity is None or p.specificity is None:
            continue
        ax.plot(
            1.0 - p.specificity, p.sensitivity, POINT_MARKERS.get(name, "D"), markersize=8, clip_on=False,
            label=f"{name} (t={p.threshold:.3f}): sens {p.sensitivity:.3f}, spec {p.specificity:.3f}",
        )  # fmt: skip
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", aspect="equal")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return _save(figure, path)


def reliability_figure(report: EvaluationReport, path: Path) -> Path:
    """Share of tumor patches against mean predicted probability per bin, with the bin counts below."""
    figure = _figure(6.0, 7.0)
    _title(figure, report, "Reliability diagram of the ensemble")
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in report.reliability if b.patches]
    centers = [(b.lower + b.upper) / 2 for b in report.reliability]
    width = report.reliability[0].upper - report.reliability[0].lower if report.reliability else 0.1
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    # Bars over the bins (as the counts below); dots at each bin's mean probability, where the
    # diagonal is measured.
    top.bar(
        [(b.lower + b.upper) / 2 for b in filled], [b.positive_rate for b in filled], width=width * 0.9,
        alpha=0.5, edgecolor="tab:blue", label=f"ensemble, ECE {report.ece:.4f}{_ci(report.ece_ci)}",
    )  # fmt: skip
    top.plot(
        [b.confidence for b in filled], [b.positive_rate for b in filled], "o", color="tab:blue",
        label="share at the bin's mean probability",
    )  # fmt: skip
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="share of tumor patches")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=7)
    bottom.bar(centers, [b.patches for b in report.reliability], width=width * 0.9, color="grey")
    bottom.set(xlabel="mean predicted probability (bin)", ylabel="patches")
    return _save(figure, path)


def confusion_figure(report: EvaluationReport, name: str, path: Path) -> Path:
    """The 2x2 confusion matrix of one operating point, counts and share of each true class."""
    point = report.operating_points[name]
    c = point.confusion
    matrix = [[c.tn, c.fp], [c.fn, c.tp]]  # rows: true class, columns: predicted (scikit-learn's order)
    darkest = max(map(max, matrix))
    figure = _figure(5.0, 5.2)
    _title(figure, report, f"Confusion matrix at {name} (threshold {point.threshold:.4f})")
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for row in range(2):
        total = max(sum(matrix[row]), 1)
        for col in range(2):
            value = matrix[row][col]
            ax.text(col, row, f"{value}\n{value / total:.1%} of row", ha="center", va="center", fontsize=10,
                    color="white" if value > 0.6 * darkest else "black")  # fmt: skip
    ax.set_xticks([0, 1], ["no tumor", "tumor"])
    ax.set_yticks([0, 1], ["no tumor", "tumor"])
    ax.set(xlabel="predicted", ylabel="true label")
    return _save(figure, path)


def write_figures(report: EvaluationReport, directory: Path) -> dict[str, Path]:
    """Every figure of the report as PNG in directory: roc (if both classes), reliability, confusion_*."""
    figures = {}
    if report.roc is not None:
        figures["roc"] = roc_figure(report, directory / "roc.png")
    figures["reliability"] = reliability_figure(report, directory / "reliability.png")
    for name in report.operating_points:
        figures[f"confusion_{name}"] = confusion_figure(report, name, directory / f"confusion_{name}.png")
    return figures
