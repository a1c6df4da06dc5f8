"""Scoring a slide's tissue cells in batches, resumable: finished cells are kept in a checkpoint file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pcam_client.tensor import PixelPredictions
from pcam_core.contract import PATCH_SIZE
from training.slides.grid import CellGrid, cut_patches, region_size
from training.slides.reader import Slide

Scorer = Callable[[np.ndarray], PixelPredictions]
"""uint8 (N, 96, 96, 3) raw patches -> their answers (a gateway's tensor input, or in-process)."""
BLOCK_CELLS = 16
"""Cells per side of the block read from the slide at once: its patches overlap, read once."""
BATCH = 256
"""Patches per scorer call."""
CONCURRENCY = 1
"""Scorer calls in flight at once: more keeps a gateway's replicas busy while this process reads the slide."""


@dataclass
class Progress:
    """Per cell: probability (NaN until scored), needs_review, and whether it is done."""

    probability: np.ndarray
    needs_review: np.ndarray
    done: np.ndarray
    release: str | None = None
    threshold: float | None = None
    key: str = ""
    """What the cells were scored for (slide, grid, options): a checkpoint of another run is not resumed."""

    @classmethod
    def empty(cls, grid: CellGrid, key: str) -> Progress:
        return cls(
            np.full(grid.shape, np.nan, np.float32),
            np.zeros(grid.shape, bool),
            np.zeros(grid.shape, bool),
            key=key,
        )

    @classmethod
    def resume(cls, path: Path, grid: CellGrid, key: str) -> Progress:
        """The checkpoint at path if it belongs to this run, else an empty one."""
        if path.is_file():
            with np.load(path) as saved:
                meta = json.loads(str(saved["meta"]))
                if meta["key"] == key and saved["done"].shape == grid.shape:
                    return cls(
                        saved["probability"], saved["needs_review"], saved["done"],
                        meta["release"], meta["threshold"], key,
                    )  # fmt: skip
        return cls.empty(grid, key)

    def save(self, path: Path) -> None:
        """Write atomically: an interruption mid-write leaves the previous checkpoint."""
        meta = json.dumps({"key": self.key, "release": self.release, "threshold": self.threshold})
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(
            partial, probability=self.probability, needs_review=self.needs_review, done=self.done, meta=meta
        )
        os.replace(partial, path)

    def record(self, cells: np.ndarray, answers: PixelPredictions) -> None:
        """Keep the answers of (K, 2) cells; answers of another release than the cells before stop the run."""
        if self.release is not None and answers.release != self.release:
            raise RuntimeError(
                f"the release changed during the run ({self.release} -> {answers.release}): one heatmap "
                "must come from one release; delete the checkpoint to start again"
            )
        rows, columns = cells[:, 0], cells[:, 1]
        self.probability[rows, columns] = answers.probability
        self.needs_review[rows, columns] = answers.needs_review
        self.done[rows, columns] = True
        self.release, self.threshold = answers.release, answers.threshold


def score_cells(
    slide: Slide,
    grid: CellGrid,
    tissue: np.ndarray,
    scorer: Scorer,
    progress: Progress,
    checkpoint: Path | None = None,
    batch: int = BATCH,
    show: bool = True,
    concurrency: int = CONCURRENCY,
) -> Progress:
    """Score every tissue cell not yet done, block by block, `batch` patches per scorer call and at most
    `concurrency` calls in flight, saving the checkpoint after each answer."""
    todo_total = int((tissue & ~progress.done).sum())
    cells = np.empty((0, 2), int)
    patches = np.empty((0, PATCH_SIZE, PATCH_SIZE, 3), np.uint8)
    in_flight: dict[Future[PixelPredictions], np.ndarray] = {}
    with (
        tqdm(total=todo_total, desc=slide.path.name, unit="patch", disable=not show) as bar,
        ThreadPoolExecutor(concurrency, thread_name_prefix="slide-scorer") as pool,
    ):

        def settle(until: int) -> None:
            """Record answers as they come until at most `until` calls are in flight. After a failed call,
            wait for the others and keep what they answered, then raise the failure."""
            failure: BaseException | None = None
            while len(in_flight) > until or (failure is not None and in_flight):
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    sent = in_flight.pop(future)
                    if future.exception() is not None:
                        failure = failure or future.exception()
                        continue
                    progress.record(sent, future.result())
                    bar.update(len(sent))
                if checkpoint is not None:
                    progress.save(checkpoint)
            if failure is not None:
                raise failure

        def send(count: int) -> None:
            nonlocal cells, patches
            settle(concurrency - 1)
            in_flight[pool.submit(scorer, patches[:count])] = cells[:count]
            cells, patches = cells[count:], patches[count:]

        for rows, columns in grid.blocks(BLOCK_CELLS):
            offsets = np.argwhere(tissue[rows, columns] & ~progress.done[rows, columns])
            if not len(offsets):
                continue  # background only: nothing read, nothing sent
            x, y = grid.patch_origin(rows.start, columns.start)
            region = slide.read(x, y, *region_size(rows, columns, grid.stride))
            cells = np.concatenate([cells, offsets + [rows.start, columns.start]])
            patches = np.concatenate([patches, cut_patches(region, offsets, grid.stride)])
            while len(cells) >= batch:
                send(batch)
        if len(cells):
            send(len(cells))
        settle(0)
    return progress
