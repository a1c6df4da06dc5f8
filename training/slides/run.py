"""One slide from file to outputs: grid, tissue, resumable scoring, files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from training.slides.grid import PCAM_STRIDE, CellGrid
from training.slides.outputs import SlideSummary, write_outputs
from training.slides.reader import Slide
from training.slides.scoring import BATCH, CONCURRENCY, Progress, Scorer, score_cells
from training.slides.tissue import tissue_cells


def checkpoint_path(out: Path, slide: Path) -> Path:
    return out / f"{slide.stem}.progress.npz"


def finished_summary(out: Path, slide: Path, key: str) -> SlideSummary | None:
    """The summary in out of this slide scored for the same run key, if there is one."""
    path = out / f"{slide.stem}.summary.json"
    if not path.is_file():
        return None
    summary = SlideSummary.model_validate_json(path.read_text())
    return summary if summary.run == key else None


def run_key(slide: Slide, grid: CellGrid, operating_point: str, tta: bool) -> str:
    """What a checkpoint's cells were scored for: the same file, grid and options resume it."""
    stat = slide.path.stat()
    facts = [str(slide.path.resolve()), stat.st_size, stat.st_mtime_ns, grid.stride, slide.resolution.target_mpp,
             slide.resolution.level0_mpp, operating_point, tta]  # fmt: skip
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def predict_slide(
    path: Path,
    scorer: Scorer,
    out: Path,
    operating_point: str,
    *,
    tta: bool = False,
    stride: int = PCAM_STRIDE,
    mpp: float | None = None,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
    show: bool = True,
    rescore: bool = False,
) -> SlideSummary:
    """Score a slide's tissue cells (resuming from out's checkpoint) and write its outputs into out; a
    slide whose outputs there come from the same run is not scored again unless `rescore`."""
    out.mkdir(parents=True, exist_ok=True)
    with Slide(path, mpp) as slide:
        grid = CellGrid.over(slide.size, stride)
        key = run_key(slide, grid, operating_point, tta)
        finished = finished_summary(out, slide.path, key)
        if finished is not None and not rescore:
            return finished  # a rerun (a retried pod of a many-slide shard) skips what is done
        thumbnail = slide.thumbnail(grid.stride)  # decodes the coarsest level: once per slide
        tissue = tissue_cells(thumbnail)
        checkpoint = checkpoint_path(out, slide.path)
        progress = Progress.resume(checkpoint, grid, key)
        score_cells(slide, grid, tissue, scorer, progress, checkpoint, batch, show, concurrency)
        summary = write_outputs(out, slide, grid, thumbnail, tissue, progress, operating_point)
    checkpoint.unlink(missing_ok=True)  # the outputs hold every cell now
    return summary


def shard_of(slides: list[Path], shard: str | None) -> list[Path]:
    """The slides of shard "I/N": positions I, I+N, ... (all of them without a shard)."""
    if shard is None:
        return slides
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--shard {shard!r}: give I/N with 0 <= I < N, e.g. 0/4")
    return slides[int(index) :: int(count)]
