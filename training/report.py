"""The evaluation report as files: report.json, the figures, report.md (and verdict.json for validate).

The Markdown is a pure function of the report (and verdict), so it can be rebuilt from report.json.
A synthetic release's note comes first, before any number.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from training import RESEARCH_USE
from training.evaluate import EvaluationReport
from training.metrics import BINARY_METRICS, Interval
from training.validate import FEW_UNITS, SENSITIVITY_TARGET, SPECIFICITY_TARGET, Verdict

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VERDICT_JSON = "verdict.json"
LABELS = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "accuracy": "accuracy",
    "kappa": "Cohen's kappa",
}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(value: float | None, interval: Interval | None, digits: int = 3) -> str:
    if interval is None:
        return _num(value, digits)
    return f"{_num(value, digits)} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _yes(value: bool) -> str:
    return "**yes**" if value else "no"


def _verdict_section(verdict: Verdict) -> list[str]:
    lines = ["## Verdict", "", f"**{verdict.statement[0]}**", ""]
    lines += [f"- {sentence}" for sentence in verdict.statement[1:]] + [""]
    rows = [
        [name, f"{v.threshold:.4f}", _num(v.sensitivity), _num(v.sensitivity_lower), _num(v.specificity),
         _num(v.specificity_lower), _yes(v.met), _yes(v.met_lower_ci)]
        for name, v in verdict.points.items()
    ]  # fmt: skip
    header = ["operating point", "threshold", "sensitivity", "CI low", "specificity", "CI low",
              "both met (estimate)", "both met (CI low)"]  # fmt: skip
    lines += _table(header, rows)
    lines += [
        "",
        f"Targets: sensitivity >= {SENSITIVITY_TARGET:g}, specificity >= {SPECIFICITY_TARGET:g}. "
        f"The answer (and `pcam validate`'s exit code) is that of `{verdict.operating_point}`, named in "
        "advance, judged on "
        + ("the 95 % CI lower bounds" if verdict.require_ci else "the point estimates")
        + ".",
        "",
    ]
    return lines


def markdown(
    report: EvaluationReport, figures: Mapping[str, str] | None = None, verdict: Verdict | None = None
) -> str:
    """report.md: disclaimer, data, verdict (validate), ensemble, operating points, members, figures.

    figures maps a figure's key (see `training.plots.write_figures`) to its path relative to report.md.
    """
    figures = figures or {}
    kind = "Validation" if verdict is not None else "Evaluation"
    lines = [f"# {kind} of release `{report.release_id}` on the `{report.split}` split", ""]
    if report.note:
        lines += [
            f"> **Warning: {report.note}.** This release was built on a synthetic PCam-like data set; "
            "none of the numbers below is a PCam result or says anything about clinical performance.",
            "",
        ]
    lines += [f"> **{RESEARCH_USE}**", ""]
    if verdict is not None:
        lines += _verdict_section(verdict)
    unit = "slides" if report.bootstrap == "slide" else "patches"
    lines += [
        "## Data",
        "",
        f"- Release `{report.release_id}`, built on **{report.data_source}** data"
        + (f" ({report.data_description})" if report.data_description else "")
        + ".",
        f"- Evaluated on the `{report.split}` split of `{report.data_dir}`: {report.patches} patches, "
        f"prevalence {report.prevalence:.3f}.",
        f"- 95 % intervals: percentile bootstrap, {report.bootstrap_rounds} resamples of "
        f"{report.bootstrap_units} {unit}"
        + (
            " (the meta CSV's slide ids: patches of one slide are not independent)."
            if unit == "slides"
            else " (no slide ids: patches are resampled as if independent, so the intervals may be too narrow)."
        )
        + " Resamples where a metric is undefined are left out of its interval.",  # fmt: skip
        *(
            [
                f"- **Only {report.bootstrap_units} {unit} to resample: too few for the bootstrap to show "
                "the sampling error, so the intervals are not to be relied on.**"
            ]
            if report.bootstrap_units < FEW_UNITS
            else []
        ),
        f"- ECE over {len(report.reliability)} equal-width probability bins. PPV and NPV hold at this "
        "split's prevalence only.",
        "",
        "## Ensemble",
        "",
    ]
    lines += _table(
        ["metric", "value [95 % CI]"],
        [
            ["AUC", _with_ci(report.auc, report.auc_ci, 4)],
            ["Brier score", _with_ci(report.brier, report.brier_ci, 4)],
            ["ECE", _with_ci(report.ece, report.ece_ci, 4)],
        ],
    )
    lines += ["", "## Operating points", "", "Value [95 % CI] of the rule p >= threshold.", ""]
    lines += _table(
        ["operating point", "threshold", *(LABELS[m] for m in BINARY_METRICS)],
        [
            [
                name,
                f"{p.threshold:.4f}",
                *(_with_ci(getattr(p, m), getattr(p, f"{m}_ci")) for m in BINARY_METRICS),
            ]
            for name, p in report.operating_points.items()
        ],
    )
    lines += [""]
    lines += _table(
        ["operating point", "TP", "FP", "TN", "FN", "chosen on validation as"],
        [
            [
                name,
                str(p.confusion.tp),
                str(p.confusion.fp),
                str(p.confusion.tn),
                str(p.confusion.fn),
                p.criterion,
            ]
            for name, p in report.operating_points.items()
        ],
    )
    if report.conformal is not None:
        c = report.conformal
        lines += ["", "## Prediction sets", ""]
        lines += [
            f"Split-conformal sets fitted on validation for {c.target_coverage:.0%} coverage "
            f"(a label is in the set iff 1 - p_label <= {c.quantile:.4f}); on this split:",
            "",
        ]
        lines += _table(
            ["measure", "value [95 % CI]"],
            [
                ["coverage (true label in the set)", _with_ci(c.coverage, c.coverage_ci, 4)],
                ["sets holding both labels", f"{c.both_labels_share:.4f}"],
            ],
        )
    lines += ["", "## Members", ""]
    lines += _table(
        ["member", "temperature", "weight", "AUC", "ECE", "Brier"],
        [
            [name, f"{m.temperature:.3f}", f"{m.weight:g}", _num(m.auc, 4), f"{m.ece:.4f}", f"{m.brier:.4f}"]
            for name, m in report.members.items()
        ],
    )
    if figures:
        lines += ["", "## Figures", ""]
        for key, path in figures.items():
            lines += [f"![{key.replace('_', ' ')}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    report: EvaluationReport, directory: Path, verdict: Verdict | None = None
) -> dict[str, Path]:
    """Write report.json, the PNG figures, report.md and (with a verdict) verdict.json into directory."""
    from training import plots  # matplotlib only when figures are asked for

    directory.mkdir(parents=True, exist_ok=True)
    written = {"json": directory / REPORT_JSON}
    written["json"].write_text(report.model_dump_json(indent=2) + "\n")
    figures = plots.write_figures(report, directory)
    written.update(figures)
    if verdict is not None:
        written["verdict"] = directory / VERDICT_JSON
        written["verdict"].write_text(verdict.model_dump_json(indent=2) + "\n")
    written["markdown"] = directory / REPORT_MD
    relative = {key: path.relative_to(directory).as_posix() for key, path in figures.items()}
    written["markdown"].write_text(markdown(report, relative, verdict))
    return written
