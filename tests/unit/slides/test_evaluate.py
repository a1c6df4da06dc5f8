"""Heatmaps against reference outlines: cell AUC and Camelyon16's lesion rules and FROC on the grid."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training import cli
from training.cli import app
from training.slides.annotations import read_annotations
from training.slides.evaluate import (
    LesionHits,
    Lesions,
    ScoredSlide,
    evaluate_slides,
    froc,
    froc_score,
    judge,
)
from training.slides.grid import CellGrid
from training.slides.outputs import write_outputs
from training.slides.reader import Slide
from training.slides.scoring import Progress

MICRONS = 32 * 0.972  # one 32-px cell at PCam's resolution


def blocks(shape: tuple[int, int], *where: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for rows, columns in where:
        mask[rows, columns] = True
    return mask


def test_lesions_closer_than_75_um_are_one_and_small_ones_are_isolated_tumor_cells() -> None:
    one_cell_apart = blocks((20, 40), (slice(2, 12), slice(2, 12)), (slice(2, 12), slice(13, 23)))
    assert Lesions.of(one_cell_apart, MICRONS).count == 1  # 31 um apart
    three_cells_apart = blocks((20, 40), (slice(2, 12), slice(2, 12)), (slice(2, 12), slice(15, 25)))
    assert Lesions.of(three_cells_apart, MICRONS).count == 2  # 93 um apart
    with_a_speck = blocks((20, 40), (slice(2, 12), slice(2, 12)), (slice(15, 16), slice(30, 31)))
    lesions = Lesions.of(with_a_speck, MICRONS)
    assert lesions.count == 1 and len(lesions.itc) == 1  # one cell (31 um): an ITC
    assert lesions.labels[15, 30] in lesions.itc and lesions.labels[5, 5] not in lesions.itc


def test_a_detection_finds_its_lesion_counts_nothing_on_an_itc_and_is_a_false_positive_elsewhere() -> None:
    shape = (30, 40)
    truth = blocks(shape, (slice(2, 12), slice(2, 12)), (slice(20, 21), slice(30, 31)))
    probability = np.full(shape, 0.01, np.float32)
    probability[6, 6], probability[5, 5] = 0.8, 0.4  # two maxima in the lesion: it keeps the best
    probability[20, 30] = 0.7  # on the isolated tumor cells
    probability[25, 5] = 0.6  # in normal tissue
    slide = ScoredSlide("s", probability, np.ones(shape, bool), 64.0, MICRONS)
    hits = judge(slide, Lesions.of(truth, MICRONS))
    np.testing.assert_allclose(hits.lesion_scores, [0.8])
    np.testing.assert_allclose(hits.false_positives, [0.6])


def test_background_is_never_a_detection() -> None:
    shape = (10, 10)
    probability = np.full(shape, 0.9, np.float32)
    slide = ScoredSlide("s", probability, np.zeros(shape, bool), 64.0, MICRONS)
    hits = judge(slide, Lesions.of(np.zeros(shape, bool), MICRONS))
    assert len(hits.false_positives) == 0 and len(hits.lesion_scores) == 0


def test_froc_pools_lesions_and_averages_false_positives_over_slides() -> None:
    hits = [
        LesionHits(false_positives=np.array([0.6]), lesion_scores=np.array([0.5])),
        LesionHits(false_positives=np.array([0.3]), lesion_scores=np.zeros(0)),
        LesionHits(false_positives=np.zeros(0), lesion_scores=np.zeros(0)),  # a normal slide, quiet
    ]
    rate, sensitivity = froc(hits)
    np.testing.assert_allclose(rate, [0, 1 / 3, 1 / 3, 2 / 3])  # thresholds 0.6, 0.5, 0.3
    np.testing.assert_allclose(sensitivity, [0, 0, 1, 1])
    score, at = froc_score(rate, sensitivity)
    assert at == pytest.approx([0, 1, 1, 1, 1, 1]) and score == pytest.approx(5 / 6)
    missed = [LesionHits(np.array([0.6]), np.array([0.0, 0.9]))]
    assert froc_score(*froc(missed))[0] == pytest.approx(0.5)  # one of two lesions, never the other


@pytest.fixture
def scored_dir(synthetic_slide, tmp_path: Path) -> Path:
    """`pcam slide predict`'s files for three slides: the synthetic one scored 0.9 on its tumor nuclei's
    cells and 0.02 elsewhere, with its outlines; "square", a 12x12-cell lesion outlined and scored 0.9;
    "normal", no outlines, scored 0.02 but for one cell at 0.7."""
    out, annotations = tmp_path / "out", tmp_path / "annotations"
    annotations.mkdir()
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size)
        tissue = np.ones(grid.shape, bool)
        progress = Progress.empty(grid, "k")
        progress.probability[:] = np.where(synthetic_slide.cell_labels(), 0.9, 0.02)
        progress.done[:], progress.release, progress.threshold = True, "rel", 0.5
        write_outputs(out, slide, grid, slide.thumbnail(32), tissue, progress, "balanced")
    (annotations / "synthetic.geojson").write_text(json.dumps(synthetic_slide.annotations()))
    with np.load(out / "synthetic.heatmap.npz") as saved:
        files = dict(saved)
    for name, hot in (("square", (slice(2, 14), slice(3, 15))), ("normal", (1, 1))):
        files["probability"] = np.full(grid.shape, 0.02, np.float32)
        files["probability"][hot] = 0.9 if name == "square" else 0.7
        np.savez_compressed(out / f"{name}.heatmap.npz", **files)
    left, top, right, bottom = (float(v * files["level0_pixels_per_cell"]) for v in (3, 2, 15, 14))
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    (annotations / "square.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return tmp_path


def test_heatmaps_against_their_outlines(scored_dir: Path) -> None:
    heatmaps = sorted((scored_dir / "out").glob("*.heatmap.npz"))
    report = evaluate_slides(heatmaps, scored_dir / "annotations")
    normal, square, synthetic = report.slides
    assert normal.annotations is None and normal.lesions == 0 and normal.false_positives == 1
    assert normal.cell_auc is None  # one class only
    assert square.lesions == square.lesions_found == 1 and square.false_positives == 0
    assert square.cell_auc == pytest.approx(1.0) and square.tumor_cells == 144
    # The outlines are disks around the nuclei: every nucleus cell is inside, a rim of cells is not.
    assert synthetic.cell_auc > 0.95 and synthetic.tumor_cells > 0
    # This small slide's tumors are under 200 um across: isolated tumor cells, not lesions to find.
    assert synthetic.lesions == 0 and synthetic.isolated_tumor_cells >= 1 and synthetic.false_positives == 0
    # The lesion is found at 0.9, the normal slide's false positive comes at 0.7.
    assert report.froc_score == pytest.approx(1.0)


def test_the_command_prints_and_writes_the_report(scored_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = scored_dir / "report.json"
    # The consoles took their width when training.cli was imported (80 columns without a terminal).
    for console in (cli.out, cli.console):
        monkeypatch.setattr(console, "width", 200)
    done = CliRunner().invoke(
        app,
        ["slide", "evaluate", str(scored_dir / "out"), "-a", str(scored_dir / "annotations"), "--report", str(report)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "FROC score 1.0000" in done.output and "none: no tumor" in done.output
    assert json.loads(report.read_text())["froc_score"] == pytest.approx(1.0)


def test_the_command_names_what_is_missing(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["slide", "evaluate", str(tmp_path), "-a", str(tmp_path)])
    assert done.exit_code == 1 and "no *.heatmap.npz" in " ".join(done.output.split())
    done = CliRunner().invoke(app, ["slide", "evaluate", str(tmp_path), "-a", str(tmp_path / "nowhere")])
    assert done.exit_code == 1 and "not a directory" in " ".join(done.output.split())


def test_the_synthetic_slide_command_writes_a_slide_and_its_outlines(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["slide", "synthetic", str(tmp_path / "demo.tiff"), "--size", "384", "480"]
    )
    assert done.exit_code == 0, done.output
    with Slide(tmp_path / "demo.tiff") as slide:
        assert slide.size == (480, 384) and slide.resolution.level0_mpp == pytest.approx(0.486)
    outlines = read_annotations(tmp_path / "demo.geojson")
    assert len(outlines) == 2 and {o.kind for o in outlines} == {"tumor"}


def test_a_heatmap_without_what_evaluation_needs_is_named(tmp_path: Path) -> None:
    np.savez_compressed(
        tmp_path / "old.heatmap.npz", probability=np.zeros((2, 2)), tissue=np.ones((2, 2), bool)
    )
    with pytest.raises(ValueError, match="old.heatmap.npz: no level0_pixels_per_cell, microns_per_cell"):
        ScoredSlide.load(tmp_path / "old.heatmap.npz")
