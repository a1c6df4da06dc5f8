"""The release a repository serves: its id, the members' weights digests and the data provenance.

The manifest's schema and its atomic writer and reader are pcam_core.release's; this builds one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pcam_core.release import (
    ActivationMapKind,
    DataProvenance,
    EnsembleRule,
    Member,
    Precision,
    ReleaseManifest,
    ReviewRules,
    StainReference,
)

VERSION = 1
"""The model version of every member in a freshly written repository; rolling releases count up."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def release_id(prefix: str, content: str, created: datetime) -> str:
    """<prefix>-<UTC yyyymmddHHMMSS>-<8 hex of a hash over what the release binds>.

    content covers the members (weights' sha256, model versions, temperatures, weights), the ensemble
    rule and the stain reference, so two releases built in one second still get two ids (and the
    gateway two sets of cache keys) unless they would serve identically.
    """
    digest = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"{prefix}-{created.astimezone(UTC):%Y%m%d%H%M%S}-{digest}"


@dataclass(frozen=True)
class MemberArtifact:
    """A trained, exported and calibrated member, ready to go into the repository.

    onnx is the graph served as the member's model.onnx: the fp32 export, or its INT8 copy (precision).
    """

    name: str
    architecture: str
    onnx: Path
    temperature: float
    weight: float
    metrics: dict[str, float] = field(default_factory=dict)
    precision: Precision = "fp32"
    activation_map: ActivationMapKind | None = None


def build_manifest(
    prefix: str,
    members: Sequence[MemberArtifact],
    data: DataProvenance,
    stain_reference: StainReference,
    ensemble: EnsembleRule,
    created: datetime | None = None,
    versions: Mapping[str, int] | None = None,
    review: ReviewRules | None = None,
) -> ReleaseManifest:
    """The release manifest binding these weights (at these model versions; default 1), data, stain
    reference and calibration."""
    created = created or datetime.now(UTC)
    versions = versions or {}
    entries = [
        Member(
            name=m.name,
            architecture=m.architecture,
            version=versions.get(m.name, VERSION),
            sha256=sha256_file(m.onnx),
            temperature=m.temperature,
            weight=m.weight,
            metrics=m.metrics,
            precision=m.precision,
            activation_map=m.activation_map,
        )
        for m in members
    ]
    return ReleaseManifest(
        release_id=release_id(prefix, _bound_content(entries, ensemble, stain_reference, review), created),
        created_at=created.astimezone(UTC).isoformat(timespec="seconds"),
        data=data,
        stain_reference=stain_reference,
        members=tuple(entries),
        ensemble=ensemble,
        review=review,
    )


def _bound_content(
    members: Sequence[Member],
    ensemble: EnsembleRule,
    stain_reference: StainReference,
    review: ReviewRules | None = None,
) -> str:
    """Canonical JSON of what a release serves with (its id's hash input)."""
    content = {
        "members": [m.model_dump(mode="json") for m in members],
        "ensemble": ensemble.model_dump(mode="json"),
        "stain_reference": stain_reference.model_dump(mode="json"),
    }
    if review is not None:  # absent, the id of a release without flags is what it always was
        content["review"] = review.model_dump(mode="json")
    return json.dumps(content, sort_keys=True)


def data_provenance(source: str, files: Sequence[Path], description: str = "") -> DataProvenance:
    """Provenance with the sha256 of every data file, keyed by file name."""
    return DataProvenance(
        source=source, checksums={f.name: sha256_file(f) for f in files}, description=description
    )
