import pytest
from pydantic import ValidationError

from pcam_core.release import (
    ReleaseManifest,
    load_release,
    resolve_operating_point,
    summarize,
    write_release,
)


def manifest_dict() -> dict:
    point = {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.9, "criterion": "youden"}
    return {
        "release_id": "demo-1",
        "created_at": "2026-11-25T00:00:00Z",
        "data": {"source": "synthetic"},
        "stain_reference": {
            "stain_matrix": [[0.56, 0.21], [0.72, 0.80], [0.40, 0.55]],
            "max_concentrations": [1.9, 1.0],
        },
        "members": [{"name": "m1", "architecture": "resnet", "sha256": "0" * 64, "temperature": 1.5}],
        "ensemble": {"operating_points": {p: point for p in ("screening", "balanced", "high_specificity")}},
    }


def test_round_trip_through_the_repository(tmp_path) -> None:
    manifest = ReleaseManifest.model_validate(manifest_dict())
    write_release(manifest, tmp_path)
    assert load_release(tmp_path) == manifest
    assert summarize(manifest).members[0].temperature == 1.5


def test_every_operating_point_is_required() -> None:
    data = manifest_dict()
    del data["ensemble"]["operating_points"]["screening"]
    with pytest.raises(ValidationError, match="screening"):
        ReleaseManifest.model_validate(data)


def test_research_use_only_cannot_be_switched_off() -> None:
    with pytest.raises(ValidationError):
        ReleaseManifest.model_validate({**manifest_dict(), "research_use_only": False})


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("conservative", "screening"), ("aggressive", "high_specificity"), ("balanced", "balanced")],
)
def test_aliases_resolve(name: str, canonical: str) -> None:
    assert resolve_operating_point(name) == canonical


def test_unknown_operating_point_raises() -> None:
    with pytest.raises(KeyError):
        resolve_operating_point("lenient")
