"""Preprocess metrics: normalization outcomes, rejections, tissue fractions, and the serving release."""

import time

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from pcam_core.release import write_release
from services.preprocess.app import create_app
from services.preprocess.metrics import record_batch
from services.preprocess.pipeline import Serving, preprocess_uploads
from services.preprocess.settings import PreprocessSettings
from services.preprocess.stain import MacenkoNormalizer
from tests.unit.common.release_fixture import write_test_release


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_records_outcomes_and_tissue_fractions(patch_paths) -> None:
    uploads = [patch_paths[0].read_bytes(), b"not an image", patch_paths[1].read_bytes()]
    batch = preprocess_uploads(uploads, Serving("rel-metrics", MacenkoNormalizer()))
    fractions = [item.tissue_fraction for item in batch.accepted()]
    kind = batch.items[1].error.kind
    before = {
        "count": sample("pcam_preprocess_tissue_fraction_count"),
        "sum": sample("pcam_preprocess_tissue_fraction_sum"),
        "applied": sample("pcam_preprocess_normalizations_total", outcome="applied", reason=""),
        "rejected": sample("pcam_preprocess_rejected_images_total", kind=kind),
    }
    record_batch(batch)
    assert sample("pcam_preprocess_tissue_fraction_count") == before["count"] + 2
    assert abs(sample("pcam_preprocess_tissue_fraction_sum") - before["sum"] - sum(fractions)) < 1e-9
    assert (
        sample("pcam_preprocess_normalizations_total", outcome="applied", reason="") == before["applied"] + 2
    )
    assert sample("pcam_preprocess_rejected_images_total", kind=kind) == before["rejected"] + 1


def test_a_skipped_normalization_is_counted_with_its_reason(patch_paths) -> None:
    blank = preprocess_uploads([patch_paths[0].read_bytes()], Serving("rel-metrics", MacenkoNormalizer()))
    blank.items[0] = blank.items[0].model_copy(
        update={"stain_normalized": False, "stain_skip_reason": "too_little_tissue"}
    )
    before = sample("pcam_preprocess_normalizations_total", outcome="skipped", reason="too_little_tissue")
    record_batch(blank)
    assert (
        sample("pcam_preprocess_normalizations_total", outcome="skipped", reason="too_little_tissue")
        == before + 1
    )


def test_release_info_follows_a_hot_reload(tmp_path) -> None:
    def info(release: str) -> float | None:
        return REGISTRY.get_sample_value("pcam_release_info", {"service": "preprocess", "release": release})

    first = write_test_release(tmp_path, "rel-info-1")
    settings = PreprocessSettings(model_repository=tmp_path, release_poll_s=0.02)
    with TestClient(create_app(settings)) as client:
        assert info("rel-info-1") == 1
        write_release(first.model_copy(update={"release_id": "rel-info-2"}), tmp_path)
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["release"] != "rel-info-2" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert info("rel-info-2") == 1
        assert info("rel-info-1") is None  # the replaced release's series is gone
