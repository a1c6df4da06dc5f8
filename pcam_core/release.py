"""The release manifest (`release.json` at the model repository root): one deployable unit.

The training package writes it, preprocess reads the stain reference, ensemble reads members and
calibration, the gateway puts the release id in every cache key (docs/architecture.md#release-manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pcam_core.errors import InvalidRequest
from pcam_core.flags import FlagRule

RELEASE_FILENAME = "release.json"
MANIFEST_SCHEMA_VERSION = 1

OPERATING_POINTS = ("screening", "balanced", "high_specificity")
OPERATING_POINT_ALIASES = {"conservative": "screening", "aggressive": "high_specificity"}
DEFAULT_OPERATING_POINT = "balanced"

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
ActivationMapKind = Literal["cam", "attention_rollout"]
"""What a member's activation_map output is: a CNN's class activation map, a ViT's attention rollout."""
"""What a member's served graph computes in: the exported float graph, or its static-QDQ INT8 copy."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StainReference(_Frozen):
    """Macenko target: stain vectors (columns H, E in optical density), 99th-pct concentrations."""

    stain_matrix: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = Field(
        description="Stain vectors in optical density: rows R, G, B; columns hematoxylin, eosin."
    )
    max_concentrations: tuple[float, float] = Field(
        description="99th-percentile concentrations of hematoxylin and eosin."
    )
    io: float = Field(240.0, gt=0, description="Transmitted light intensity.")
    alpha: float = Field(1.0, gt=0, lt=50, description="Percentile for the robust stain angles.")
    beta: float = Field(0.15, gt=0, description="Optical-density threshold for tissue pixels.")


class DataProvenance(_Frozen):
    source: Literal["pcam", "synthetic"] = Field(description="The data set the members were trained on.")
    checksums: dict[str, str] = Field(default_factory=dict, description="File name -> sha256.")
    description: str = Field("", description="Free text about the data.")


class Member(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", description="The member's model name in Triton.")
    architecture: str = Field(description="The network (a timm model name).")
    version: int = Field(1, ge=1, description="The member's model version in Triton.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the served model file.")
    temperature: float = Field(gt=0, description="Temperature dividing the member's logit (calibration).")
    weight: float = Field(1.0, gt=0, description="The member's weight in the ensemble's weighted mean.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Validation metrics, by name.")
    # Defaulted: release.json files written before the field existed served the fp32 graphs.
    precision: Precision = Field("fp32", description="fp32, or int8 (the static-QDQ INT8 graph, cpu target).")
    # Defaulted: graphs exported before the output existed have no activation map.
    activation_map: ActivationMapKind | None = Field(
        None,
        description="The graph's activation_map output: cam (CNN) or attention_rollout (ViT); none: absent.",
    )


class OperatingPoint(_Frozen):
    threshold: float = Field(ge=0, le=1, description="Label 1 at an ensemble probability >= this.")
    sensitivity: float = Field(
        ge=0, le=1, description="Sensitivity at the threshold on the validation split."
    )
    specificity: float = Field(
        ge=0, le=1, description="Specificity at the threshold on the validation split."
    )
    criterion: str = Field(description="How the threshold was chosen.")


class ConformalRule(_Frozen):
    """Split-conformal prediction sets (pcam_core.conformal), fitted on the calibration split."""

    score: Literal["lac"] = Field("lac", description="Nonconformity 1 - p_label; sets are never empty.")
    coverage: float = Field(gt=0, lt=1, description="The share of true labels the sets are fitted to hold.")
    quantile: float = Field(ge=0, le=1, description="A label is in the set iff 1 - p_label <= quantile.")
    calibration_patches: int = Field(ge=1, description="Patches of the split it was fitted on.")
    calibration_coverage: float = Field(ge=0, le=1, description="Share of true labels held on that split.")
    both_labels_share: float = Field(ge=0, le=1, description="Share of sets holding both labels there.")


class EnsembleRule(_Frozen):
    rule: Literal["weighted_mean"] = Field(
        "weighted_mean", description="How member probabilities combine: the weighted mean of the members'."
    )
    temperature: float = Field(
        1.0, gt=0, description="Ensemble temperature applied to the logit of the weighted mean (1: none)."
    )
    operating_points: dict[str, OperatingPoint] = Field(
        description="By name: screening, balanced and high_specificity (all three required)."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Validation metrics, by name.")
    # Defaulted: release.json files written before the field existed have no prediction sets.
    conformal: ConformalRule | None = Field(None, description="Prediction sets; null: none.")

    @model_validator(mode="after")
    def _all_operating_points(self) -> EnsembleRule:
        missing = set(OPERATING_POINTS) - set(self.operating_points)
        if missing:
            raise ValueError(f"operating points missing: {sorted(missing)}")
        return self


class StainDistribution(_Frozen):
    """Where the training patches' own Macenko estimates lie (`services.preprocess.quality`).

    Features: the two stain vectors' optical densities (H then E, R G B each) and the log of the two
    99th-percentile concentrations; a patch's distance is Mahalanobis's under this mean and precision.
    """

    mean: tuple[float, ...] = Field(min_length=8, max_length=8, description="Mean of the 8 features.")
    precision: tuple[tuple[float, ...], ...] = Field(
        min_length=8, max_length=8, description="Inverse covariance of the 8 features (8 rows of 8)."
    )
    patches: int = Field(ge=1, description="Training patches with a stain estimate it was fitted on.")


class ReviewRules(_Frozen):
    """The review flags' rules (pcam_core.flags), fitted on the validation split by `pcam calibrate`."""

    stain: StainDistribution = Field(description="The training patches' stain estimates.")
    feature_scales: dict[str, float] = Field(
        description="Per member, the median validation feature distance: each member's distance is "
        "divided by it before the ensemble's feature score averages them."
    )
    flags: dict[str, FlagRule] = Field(description="Each flag's rule, by flag name.")
    validation_patches: int = Field(ge=1, description="Validation patches the rules were fitted on.")
    validation_flagged: float = Field(
        ge=0, le=1, description="Share of validation patches with at least one flag (without tta)."
    )


class ReleaseManifest(_Frozen):
    schema_version: Literal[1] = Field(MANIFEST_SCHEMA_VERSION, description="Version of this layout.")
    release_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
        description="The release's id: in every answer and in every gateway cache key.",
    )
    created_at: str = Field(description="When the release was written (ISO 8601, UTC).")
    research_use_only: Literal[True] = Field(True, description="Research use only, not for diagnosis.")
    data: DataProvenance = Field(description="The data the members were trained on.")
    stain_reference: StainReference = Field(description="Preprocess's stain-normalization target.")
    members: tuple[Member, ...] = Field(min_length=1, description="The ensemble's models.")
    ensemble: EnsembleRule = Field(description="How the members' answers combine into a decision.")
    # Defaulted: release.json files written before the field existed raise no review flags.
    review: ReviewRules | None = Field(None, description="The review flags' rules; null: no flags.")


def resolve_operating_point(name: str) -> str:
    """Map an operating point name or alias to its canonical name; raise KeyError if unknown."""
    canonical = OPERATING_POINT_ALIASES.get(name, name)
    if canonical not in OPERATING_POINTS:
        raise KeyError(name)
    return canonical


def parse_operating_point(name: str) -> str:
    """The canonical operating point for a name or alias; InvalidRequest naming the choices otherwise."""
    try:
        return resolve_operating_point(name)
    except KeyError:
        choices = ", ".join((*OPERATING_POINTS, *OPERATING_POINT_ALIASES))
        raise InvalidRequest(
            f"Received {name!r}; expected one of {choices}.", kind="unknown-operating-point"
        ) from None


def load_release(path: Path) -> ReleaseManifest:
    """Read and validate a manifest: a path to the file or to the model repository holding it."""
    if path.is_dir():
        path = path / RELEASE_FILENAME
    return ReleaseManifest.model_validate_json(path.read_bytes())


def write_release(manifest: ReleaseManifest, repository: Path) -> Path:
    """Write the manifest at the root of a model repository, atomically."""
    target = repository / RELEASE_FILENAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    tmp.replace(target)
    return target


MODELS_EXAMPLE: dict[str, Any] = {
    "release_id": "pcam-2024-06-01",
    "created_at": "2024-06-01T12:00:00Z",
    "research_use_only": True,
    "data": {"source": "pcam", "checksums": {"camelyonpatch_level_2_split_train_x.h5": "ab12..."}},
    "members": [
        {
            "name": "seresnet50",
            "architecture": "seresnet50",
            "version": 1,
            "sha256": "c0ffee" + "0" * 58,
            "temperature": 1.31,
            "weight": 1.0,
            "metrics": {"auroc": 0.95},
        }
    ],
    "ensemble_rule": "weighted_mean",
    "operating_points": {
        "balanced": {"threshold": 0.47, "sensitivity": 0.89, "specificity": 0.9, "criterion": "youden_j"}
    },
    "operating_point_aliases": {"conservative": "screening", "aggressive": "high_specificity"},
    "default_operating_point": "balanced",
}


class ReleaseSummary(BaseModel):
    """What `GET /v1/models` tells users about the serving release."""

    release_id: str
    created_at: str
    research_use_only: bool
    data: DataProvenance
    members: list[Member]
    ensemble_rule: str
    operating_points: dict[str, OperatingPoint]
    operating_point_aliases: dict[str, str]
    default_operating_point: str
    conformal: ConformalRule | None = None
    review: ReviewRules | None = None


def summarize(manifest: ReleaseManifest) -> ReleaseSummary:
    """The public summary of a manifest (everything but the stain reference internals)."""
    return ReleaseSummary(
        release_id=manifest.release_id,
        created_at=manifest.created_at,
        research_use_only=manifest.research_use_only,
        data=manifest.data,
        members=list(manifest.members),
        ensemble_rule=manifest.ensemble.rule,
        operating_points=manifest.ensemble.operating_points,
        operating_point_aliases=OPERATING_POINT_ALIASES,
        default_operating_point=DEFAULT_OPERATING_POINT,
        conformal=manifest.ensemble.conformal,
        review=manifest.review,
    )
