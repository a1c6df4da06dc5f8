"""`pcam validate`: do the clinical targets hold on a split? Research use only, not for diagnosis.

The targets are checked at every operating point, on the point estimates and on the lower bounds of
their 95 % bootstrap intervals. The pass/fail answer is about one operating point named in advance
(default screening): picking the best of three after seeing the test split would flatter the release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from pcam_core.release import OPERATING_POINT_ALIASES, OPERATING_POINTS, resolve_operating_point
from training import RESEARCH_USE

if TYPE_CHECKING:
    # Only a type here: the CLI imports this module's targets for its help text without onnxruntime.
    from training.evaluate import EvaluationReport

SENSITIVITY_TARGET = 0.95
SPECIFICITY_TARGET = 0.90
FEW_UNITS = 20
"""Fewer slides (or patches) than this make a percentile bootstrap interval meaningless."""
FITTED_SPLITS = ("train", "valid")
"""Splits the release was fitted on (weights; temperatures and thresholds): not held-out evidence."""
VALIDATED_POINT = "screening"
"""The operating point whose verdict is the answer unless another is named (before seeing the data)."""


class PointVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)
    threshold: float
    sensitivity: float | None
    specificity: float | None
    sensitivity_lower: float | None
    specificity_lower: float | None
    met: bool
    """Both targets met by the point estimates."""
    met_lower_ci: bool
    """Both targets met by the lower bounds of the 95 % intervals."""


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)
    release_id: str
    split: str
    data_source: str
    note: str | None
    sensitivity_target: float = SENSITIVITY_TARGET
    specificity_target: float = SPECIFICITY_TARGET
    operating_point: str
    """The operating point named in advance whose result is the answer (and the exit code)."""
    require_ci: bool
    """Whether the answer asks the interval lower bounds, not only the point estimates, to meet the targets."""
    met: bool
    points: dict[str, PointVerdict]
    meeting: list[str]
    """Operating points meeting both targets by point estimates."""
    meeting_lower_ci: list[str]
    """Operating points meeting both targets by interval lower bounds."""
    statement: list[str]
    """The verdict in plain words, one sentence per entry."""


def _meets(value: float | None, target: float) -> bool:
    return value is not None and value >= target


def _lower(interval: tuple[float, float] | None) -> float | None:
    return None if interval is None else interval[0]


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _against(what: str, value: float | None, low: float | None, target: float) -> str:
    """e.g. 'sensitivity 0.962 (95 % CI lower bound 0.941) meets the target >= 0.95'."""
    verb = "meets" if _meets(value, target) else "misses"
    bound = "" if low is None else f" (95 % CI lower bound {low:.3f})"
    return f"{what} {_num(value)}{bound} {verb} the target >= {target:g}"


def operating_point_name(name: str) -> str:
    """The canonical name of an operating point or alias; a ValueError naming the choices otherwise."""
    try:
        return resolve_operating_point(name)
    except KeyError:
        choices = ", ".join([*OPERATING_POINTS, *OPERATING_POINT_ALIASES])
        raise ValueError(f"unknown operating point {name!r}: choose one of {choices}") from None


def caveats(report: EvaluationReport, require_ci: bool) -> list[str]:
    """What limits a verdict on this report, as sentences; a ValueError where no verdict can be given.

    With require_ci the answer rests on the interval bounds, which too few slides make meaningless.
    """
    if require_ci and report.bootstrap_units < FEW_UNITS:
        raise ValueError(
            f"--require-ci needs at least {FEW_UNITS} {report.bootstrap} units to resample, the "
            f"{report.split} split has {report.bootstrap_units}: its interval bounds would say nothing"
        )
    notes = []
    if report.split in FITTED_SPLITS:
        notes.append(
            f"The release was fitted on the {report.split} split: this is not a held-out result; "
            "validate on the test split."
        )
    if report.bootstrap_units < FEW_UNITS:
        notes.append(
            f"Only {report.bootstrap_units} {report.bootstrap} units to resample: the intervals are not reliable."
        )
    return notes


def verdict(
    report: EvaluationReport, operating_point: str = VALIDATED_POINT, require_ci: bool = False
) -> Verdict:
    """Check sensitivity >= SENSITIVITY_TARGET and specificity >= SPECIFICITY_TARGET at every point."""
    chosen = operating_point_name(operating_point)
    if chosen not in report.operating_points:
        raise ValueError(f"operating point {chosen!r} is not in the report")
    points = {}
    for name, p in report.operating_points.items():
        sens_low, spec_low = _lower(p.sensitivity_ci), _lower(p.specificity_ci)
        points[name] = PointVerdict(
            threshold=p.threshold,
            sensitivity=p.sensitivity,
            specificity=p.specificity,
            sensitivity_lower=sens_low,
            specificity_lower=spec_low,
            met=_meets(p.sensitivity, SENSITIVITY_TARGET) and _meets(p.specificity, SPECIFICITY_TARGET),
            met_lower_ci=_meets(sens_low, SENSITIVITY_TARGET) and _meets(spec_low, SPECIFICITY_TARGET),
        )
    meeting = [n for n, v in points.items() if v.met]
    meeting_lower = [n for n, v in points.items() if v.met_lower_ci]
    at = points[chosen]
    met = at.met_lower_ci if require_ci else at.met
    basis = "the 95 % CI lower bounds" if require_ci else "the point estimates"
    statement = [
        f"Clinical targets {'MET' if met else 'NOT MET'} by release {report.release_id} on the "
        f"{report.split} split at the {chosen} operating point (threshold {at.threshold:.4f}), judged on "
        f"{basis}: sensitivity >= {SENSITIVITY_TARGET:g} and specificity >= {SPECIFICITY_TARGET:g}.",
        f"At {chosen}: "
        + _against("sensitivity", at.sensitivity, at.sensitivity_lower, SENSITIVITY_TARGET)
        + "; "
        + _against("specificity", at.specificity, at.specificity_lower, SPECIFICITY_TARGET)
        + ".",
        "Operating points meeting both targets by point estimate: " + (", ".join(meeting) or "none") + ".",
        "Operating points meeting both targets by 95 % CI lower bound: "
        + (", ".join(meeting_lower) or "none")
        + ".",
    ]
    if report.note:
        statement.append(
            f"Warning: {report.note}. The release was built on synthetic data, so this verdict says "
            "nothing about PCam or about clinical performance."
        )
    statement.append(RESEARCH_USE)
    return Verdict(
        release_id=report.release_id,
        split=report.split,
        data_source=report.data_source,
        note=report.note,
        operating_point=chosen,
        require_ci=require_ci,
        met=met,
        points=points,
        meeting=meeting,
        meeting_lower_ci=meeting_lower,
        statement=statement,
    )
