"""A valid manifest for unit tests that need a release.json on disk."""

from pathlib import Path

from pcam_core.release import (
    OPERATING_POINTS,
    DataProvenance,
    EnsembleRule,
    Member,
    OperatingPoint,
    ReleaseManifest,
    write_release,
)
from services.preprocess.stain import DEFAULT_REFERENCE


def write_test_release(repository: Path, release_id: str = "unit-1") -> ReleaseManifest:
    point = OperatingPoint(threshold=0.5, sensitivity=0.9, specificity=0.9, criterion="test")
    manifest = ReleaseManifest(
        release_id=release_id,
        created_at="2026-11-25T00:00:00Z",
        data=DataProvenance(source="synthetic"),
        stain_reference=DEFAULT_REFERENCE,
        members=(Member(name="m1", architecture="a", sha256="0" * 64, temperature=1.0),),
        ensemble=EnsembleRule(operating_points={p: point for p in OPERATING_POINTS}),
    )
    write_release(manifest, repository)
    return manifest
