"""`pcam slide predict` against the real stack and in-process: the same heatmap, background never sent,
and an interrupted run resumed without a patch inferred twice (Triton's own counters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from devstack.stack import LocalStack
from pcam_client import PCamClient
from tests.integration.test_predict import triton_patches
from tests.real_slide import write_real_slide
from training.cli import app
from training.slides.run import checkpoint_path, predict_slide
from training.slides.scorers import gateway_scorer
from training.slides.synthetic import SyntheticSlide, write_synthetic_slide

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    return write_synthetic_slide(tmp_path_factory.mktemp("slide") / "section.tiff", size=(480, 576), seed=11)


@pytest.fixture(scope="module", params=["synthetic", "real H&E"])
def any_slide(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic section, and a slide of the real H&E images in tests/data on glass."""
    if request.param == "synthetic":
        return request.getfixturevalue("slide").path
    return write_real_slide(tmp_path_factory.mktemp("real") / "section.tiff").path


def test_through_the_gateway_and_in_process_the_heatmap_is_the_same(
    any_slide: Path, stack: LocalStack, model_repository: Path, tmp_path: Path
) -> None:
    slide = any_slide
    url = stack.config.url("gateway")
    before = triton_patches(stack)
    remote = CliRunner().invoke(
        app,
        ["slide", "predict", str(slide), "--url", url, "-o", str(tmp_path / "r"), "--concurrency", "3"],
    )
    assert remote.exit_code == 0, remote.output
    after = triton_patches(stack)
    local = CliRunner().invoke(
        app, ["slide", "predict", str(slide), "-r", str(model_repository), "-o", str(tmp_path / "l")]
    )
    assert local.exit_code == 0, local.output
    with (
        np.load(tmp_path / "r" / "section.heatmap.npz") as remote_grid,
        np.load(tmp_path / "l" / "section.heatmap.npz") as local_grid,
    ):
        np.testing.assert_array_equal(remote_grid["tissue"], local_grid["tissue"])
        np.testing.assert_allclose(
            remote_grid["probability"], local_grid["probability"], atol=1e-5, equal_nan=True
        )
        tissue, cells = int(remote_grid["tissue"].sum()), remote_grid["tissue"].size
    # Background cells are never sent: each member inferred exactly one patch per tissue cell.
    assert {model: after[model] - before.get(model, 0) for model in after} == {m: tissue for m in after}
    summary = json.loads((tmp_path / "r" / "section.summary.json").read_text())
    assert summary["tissue_cells"] == tissue and summary["release"] and summary["research_use"]
    for suffix in ("heatmap.png", "regions.geojson", "cells.csv"):
        assert (tmp_path / "r" / f"section.{suffix}").is_file()
    assert 0 < tissue < cells  # glass around the tissue: never sent
    assert not checkpoint_path(tmp_path / "r", slide).exists()


def test_a_killed_run_resumes_without_inferring_a_patch_twice(
    slide: SyntheticSlide, stack: LocalStack, tmp_path: Path
) -> None:
    with PCamClient(stack.config.url("gateway")) as client:
        score = gateway_scorer(client, "balanced", cache=False)  # every patch reaches Triton
        calls = 0

        def dies_on_the_third_call(patches: np.ndarray):
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt  # what a killed terminal leaves behind
            return score(patches)

        before = triton_patches(stack)
        with pytest.raises(KeyboardInterrupt):
            predict_slide(slide.path, dies_on_the_third_call, tmp_path, "balanced", batch=32, show=False)
        assert checkpoint_path(tmp_path, slide.path).exists()
        summary = predict_slide(slide.path, score, tmp_path, "balanced", batch=32, show=False)
    after = triton_patches(stack)
    assert {model: after[model] - before.get(model, 0) for model in after} == {
        model: summary.tissue_cells for model in after
    }
