"""docs/tutorials/score-a-slide.md as a user follows it: its marked blocks run, as written, and what the
page says they write is there and parses.

Blocks run from a scratch working directory whose `model_repository` is the session's smoke release and
whose `.venv` is this interpreter's virtualenv, so `.venv/bin/pcam ... -r model_repository` is the
page's command unchanged. The only change to a block is the gateway's address in the `--url` block
(the session's stack listens on free ports, not 8080). The first in-process scoring is interrupted at
its third batch and then run again, as the page's "Stop and resume" describes. The sample JSON the
page shows must match the real files' fields; the blocks for real scans cannot run here (no scans), so
each of their commands is parsed by the real CLI instead. The smoke release barely learns: nothing here
judges the heatmap's quality (tests/unit/training/test_quality_bars.py does, with the demo release).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tiffslide
from PIL import Image

from devstack.stack import LocalStack
from tests.unit.deploy.walkthrough import Block, block, blocks, parse_pcam, run_block, user_workdir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorials" / "score-a-slide.md"
IN_PROCESS = ("slide-synthetic", "slide-predict-local", "slide-read", "slide-rescore", "slide-evaluate")
THROUGH_THE_STACK = ("slide-predict-stack",)
SHOWN = ("slide-summary", "slide-evaluation")
"""Sample outputs the page shows: compared field by field with the real files."""
PARSED_ONLY = ("slide-real-mpp", "slide-real-many")
"""Commands for real scans: parsed by the real CLI, not run."""
OUT = Path("slides") / "local"
BAR_TOTAL = re.compile(r"demo\.tiff:\s+\d+%\|[^|]*\|\s*\d+/(\d+)")
"""The total of `pcam slide predict`'s progress bar (tqdm on stderr): the cells this run scores."""
CELL_AREA_MM2 = (32 * 0.972 / 1000) ** 2


def step(name: str) -> Block:
    return block(TUTORIAL, name)


def bar_total(stderr: str) -> int:
    match = BAR_TOTAL.search(stderr)
    assert match, f"no progress bar in:\n{stderr}"
    return int(match.group(1))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def workdir(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's working directory: the smoke release as `model_repository`, and the virtualenv."""
    return user_workdir(tmp_path_factory.mktemp("slide-tutorial"), model_repository=model_repository)


@pytest.fixture(scope="module")
def slide(workdir: Path) -> Path:
    """Step 1: the synthetic slide and its outlines."""
    run_block(step("slide-synthetic"), workdir)
    return workdir / "slides" / "demo.tiff"


# Ctrl-C while the third batch is scored: at the same point of every run, however fast it is (a user's
# Ctrl-C is a KeyboardInterrupt in the main thread, where in-process scoring runs).
INTERRUPT = """
from training.slides.scorers import LocalScorer

_calls, _score = 0, LocalScorer.__call__


def _interrupting(self, patches):
    global _calls
    _calls += 1
    if _calls == 3:
        raise KeyboardInterrupt
    return _score(self, patches)


LocalScorer.__call__ = _interrupting
"""


@pytest.fixture(scope="module")
def interrupted(slide: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Step 2's command as written, stopped as Ctrl-C stops it while its third batch is scored (a
    sitecustomize in the child only: the command and its arguments are the page's)."""
    hooks = tmp_path_factory.mktemp("interrupt")
    (hooks / "sitecustomize.py").write_text(INTERRUPT)
    pythonpath = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    checkpoint = workdir / OUT / "demo.progress.npz"
    done = run_block(step("slide-predict-local"), workdir, extra_env={"PYTHONPATH": pythonpath}, check=False)
    assert checkpoint.exists(), f"no checkpoint after the interruption (rc {done.returncode}):\n{done.stderr}"
    with np.load(checkpoint) as saved:
        cells = int(saved["done"].sum())
    return {"returncode": done.returncode, "checkpoint": checkpoint, "done": cells}


@pytest.fixture(scope="module")
def resumed(interrupted: dict, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Step 2's command again, after the interruption: it resumes from the checkpoint."""
    return run_block(step("slide-predict-local"), workdir)


@pytest.fixture(scope="module")
def summary(resumed: subprocess.CompletedProcess[str], workdir: Path) -> dict:
    return read_json(workdir / OUT / "demo.summary.json")


def test_the_synthetic_slide_states_its_resolution_and_has_its_outlines(slide: Path) -> None:
    with tiffslide.TiffSlide(slide) as opened:
        assert float(opened.properties["tiffslide.mpp-x"]) == pytest.approx(0.486)
        assert opened.level_count >= 2 and opened.level_downsamples[1] == pytest.approx(2)
        assert opened.dimensions == (2 * 1920, 2 * 1536)  # 1536 x 1920 at PCam's resolution, stored at twice
    outlines = read_json(slide.with_suffix(".geojson"))
    assert outlines["type"] == "FeatureCollection" and len(outlines["features"]) == 2  # two tumors
    for feature in outlines["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["classification"]["name"] == "Tumor"


def test_an_interrupted_run_resumes_without_scoring_finished_cells_again(
    interrupted: dict, resumed: subprocess.CompletedProcess[str], summary: dict
) -> None:
    assert interrupted["returncode"] != 0, "Ctrl-C did not stop the run"
    assert 0 < interrupted["done"] < summary["tissue_cells"]
    # The progress bar of the second run counts only the cells left.
    assert bar_total(resumed.stderr) == summary["tissue_cells"] - interrupted["done"]
    assert not interrupted["checkpoint"].exists(), "the checkpoint is deleted once the outputs are written"


def table_row(suffix: str) -> list[str]:
    """The backquoted names in the page's output table row of `demo.<suffix>`, the file's own left out."""
    (row,) = [line for line in TUTORIAL.read_text().splitlines() if line.startswith(f"| `demo.{suffix}` |")]
    return re.findall(r"`([^`]+)`", row)[1:]


def test_every_file_the_page_lists_is_written_and_parses(summary: dict, workdir: Path) -> None:
    listed = re.findall(r"^\| `demo\.([\w.]+)` \|", TUTORIAL.read_text(), re.MULTILINE)
    assert sorted(listed) == ["cells.csv", "heatmap.npz", "heatmap.png", "regions.geojson", "summary.json"]
    out = workdir / OUT
    assert sorted(path.name for path in out.iterdir()) == sorted(f"demo.{suffix}" for suffix in listed)
    with np.load(out / "demo.heatmap.npz") as grid:
        assert set(table_row("heatmap.npz")) == set(grid.files)
        probability, tissue = grid["probability"], grid["tissue"]
        assert int(grid["stride"]) == 32 and float(grid["microns_per_cell"]) == pytest.approx(32 * 0.972)
        assert float(grid["level0_pixels_per_cell"]) == pytest.approx(64)  # level 0 at twice PCam's
    assert probability.shape == (1536 // 32, 1920 // 32) and tissue.sum() == summary["tissue_cells"]
    assert np.isnan(probability[~tissue]).all() and not np.isnan(probability[tissue]).any()
    with Image.open(out / "demo.heatmap.png") as png:
        assert png.format == "PNG" and png.size == (4 * probability.shape[1], 4 * probability.shape[0])
    regions = read_json(out / "demo.regions.geojson")
    assert regions["type"] == "FeatureCollection" and len(regions["features"]) == summary["regions"]
    for feature in regions["features"]:
        assert feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["classification"]["name"] == "Tumor"
    assert sum(f["properties"]["cells"] for f in regions["features"]) == summary["tumor_cells"]
    with (out / "demo.cells.csv").open(newline="") as table:
        reader = csv.reader(table)
        assert next(reader) == table_row("cells.csv")
        rows = list(reader)
    assert len(rows) == summary["tissue_cells"]
    row, column, x, y, p, review = rows[0]
    assert (int(x), int(y)) == (int(column) * 64, int(row) * 64) and 0 <= float(p) <= 1 and review in "01"


def test_the_summary_has_the_fields_the_page_shows_and_explains(summary: dict) -> None:
    shown = json.loads(step("slide-summary").code)
    assert set(shown) == set(summary)
    for field, value in shown.items():
        assert isinstance(summary[field], type(value)), field
    explained = re.findall(r"^- \*\*(.+?)\*\*", TUTORIAL.read_text(), re.MULTILINE)
    fields = {name for item in explained for name in re.findall(r"`(\w+)`", item)}
    assert fields and fields <= set(summary), fields - set(summary)
    # Read as the page says: level 1 of a slide stored at 0.486 um/px; its tissue does not depend on the
    # release, so it is the page's.
    for field in ("stride", "target_mpp", "level0_mpp", "level", "tissue_cells", "slide", "operating_point"):
        assert summary[field] == shown[field], field
    assert summary["tumor_area_mm2"] == pytest.approx(summary["tumor_cells"] * CELL_AREA_MM2, rel=1e-3)
    assert summary["largest_region_mm2"] <= summary["tumor_area_mm2"]
    assert summary["release"].startswith("smoke-") and summary["research_use"] == shown["research_use"]


def test_the_python_snippet_reads_the_grid(summary: dict, workdir: Path) -> None:
    printed = run_block(step("slide-read"), workdir).stdout.strip()
    assert printed == (
        f"(48, 60) cells of 31.1 um, {summary['tissue_cells']} tissue, {summary['tumor_cells']} tumor"
    )


def test_rescore_scores_every_cell_again_to_the_same_heatmap(summary: dict, workdir: Path) -> None:
    with np.load(workdir / OUT / "demo.heatmap.npz") as grid:
        resumed = grid["probability"]
    rescored = run_block(step("slide-rescore"), workdir)
    assert bar_total(rescored.stderr) == summary["tissue_cells"]
    with np.load(workdir / OUT / "demo.heatmap.npz") as grid:
        np.testing.assert_allclose(grid["probability"], resumed, atol=1e-6, equal_nan=True)


def test_evaluate_writes_the_report_the_page_shows(summary: dict, workdir: Path) -> None:
    run_block(step("slide-evaluate"), workdir)
    report = read_json(workdir / "slides" / "evaluation.json")
    shown = json.loads(step("slide-evaluation").code)
    assert set(shown) <= set(report)
    for field, value in shown.items():
        assert isinstance(report[field], type(value)), field
    (evaluated,) = report["slides"]
    (shown_slide,) = shown["slides"]
    assert set(shown_slide) == set(evaluated)
    assert set(report["froc_sensitivities"]) == set(shown["froc_sensitivities"])
    # What the outlines decide, whatever the release: the tumor cells, and the two tumors as one lesion.
    for field in ("slide", "annotations", "tumor_cells", "lesions", "isolated_tumor_cells"):
        assert evaluated[field] == shown_slide[field], field
    assert evaluated["scored_cells"] == summary["tissue_cells"]
    assert 0 <= report["cell_auc"] <= 1 and 0 <= report["froc_score"] <= 1


def test_through_the_stack_the_heatmap_is_the_one_in_process(
    summary: dict, stack: LocalStack, workdir: Path
) -> None:
    run_block(step("slide-predict-stack"), workdir, url=stack.config.url("gateway"))
    remote = read_json(workdir / "slides" / "out" / "demo.summary.json")
    assert remote["release"] == summary["release"] and remote["tissue_cells"] == summary["tissue_cells"]
    with (
        np.load(workdir / "slides" / "out" / "demo.heatmap.npz") as through_the_stack,
        np.load(workdir / OUT / "demo.heatmap.npz") as in_process,
    ):
        np.testing.assert_allclose(
            through_the_stack["probability"], in_process["probability"], atol=1e-5, equal_nan=True
        )


@pytest.mark.parametrize("name", PARSED_ONLY)
def test_the_commands_for_real_scans_parse(name: str) -> None:
    lines = [line for line in step(name).code.splitlines() if line.strip()]
    assert lines
    for line in lines:
        params = parse_pcam(line)
        assert params["slides"] and params["output"] == Path("scans/heatmaps")
        assert (params["repository"] is None) != (params["url"] is None), line


def test_every_marked_block_is_run_compared_or_parsed() -> None:
    names = [b.name for b in blocks(TUTORIAL)]
    assert sorted(names) == sorted({*IN_PROCESS, *THROUGH_THE_STACK, *SHOWN, *PARSED_ONLY})
