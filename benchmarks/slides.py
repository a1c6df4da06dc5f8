"""Whole-slide scoring: tiles per second through the stack against the same release in this process,
with the slide client's own CPU per tile.

    python -m benchmarks.slides [--repository model_repository] [--rounds 2] [--concurrency 2]

Writes a synthetic pyramidal slide (`training.slides.synthetic`, zlib tiles, PCam's resolution one
level below level 0), starts the local stack with the release in `--repository`, then, rounds
alternating, runs `predict_slide` over its tissue cells three ways:

- reader only: every cell read and cut, answered by a stand-in that does no work (the client's ceiling);
- in-process: `pcam slide predict --repository`'s scorer (preprocess + the members in onnxruntime);
- through the stack: `pcam slide predict --url`'s scorer (tensor batches, cache off so every tile
  reaches Triton), `--concurrency` requests in flight.

CPU per tile comes from /proc for each stack process and from this process (the slide client) for the
rest. The arithmetic for a 100,000 x 100,000 px slide scanned at 40x is in the JSON's `whole_slide`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import write
from benchmarks.serving import LOAD_CLIENT, SERVICES, cpu_seconds
from loadtests.run_local import local_stack
from pcam_client import PCamClient
from pcam_client.tensor import PixelPredictions
from training.slides.reader import PCAM_MPP
from training.slides.run import predict_slide
from training.slides.scorers import LocalScorer, gateway_scorer
from training.slides.scoring import Scorer
from training.slides.synthetic import write_synthetic_slide

ROOT = Path(__file__).resolve().parents[1]
OPERATING_POINT = "balanced"
SCAN_40X_MPP = 0.25
"""Microns per pixel of a slide scanned at 40x (Camelyon16's scanners: 0.226-0.243)."""
SLIDE_40X_SIDE = 100_000
GPU_TILES_PER_S = 20_000
"""The GPU throughput the platform is sized for (docs/benchmarks.md, the ceiling benchmark)."""
TISSUE_FRACTION = 0.3
"""Share of a lymph-node slide's area that is tissue (an assumption; the synthetic section's is larger)."""


def no_work(patches: np.ndarray) -> PixelPredictions:
    """Answers without looking: what reading and cutting the slide costs on its own."""
    n = len(patches)
    zeros = np.zeros(n, np.float32)
    return PixelPredictions(zeros, np.zeros(n, np.int32), zeros, np.zeros(n, bool), OPERATING_POINT, 0.5,
                            "none", ("none",), False, 0)  # fmt: skip


@dataclass(frozen=True)
class Run:
    tiles: int
    wall_s: float
    client_cpu_s: float
    stack_cpu_s: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.tiles / self.wall_s


def scored(slide: Path, scorer: Scorer, concurrency: int, batch: int, stack=None) -> Run:
    """One whole run of `predict_slide` into a fresh directory, timed, with this process's CPU and each
    stack process's CPU over it."""
    before = cpu_seconds(stack) if stack else {}
    with tempfile.TemporaryDirectory(prefix="pcam-slide-") as out:
        began, cpu = time.perf_counter(), time.process_time()
        summary = predict_slide(
            slide, scorer, Path(out), OPERATING_POINT, batch=batch, concurrency=concurrency, show=False
        )
        wall, client = time.perf_counter() - began, time.process_time() - cpu
    after = cpu_seconds(stack) if stack else {}
    return Run(summary.tissue_cells, wall, client, {name: after[name] - before[name] for name in after})


def per_tile_ms(runs: list[Run], cpu: Callable[[Run], float]) -> float:
    return round(statistics.median(cpu(r) * 1000 / r.tiles for r in runs), 3)


def whole_slide(client_ms: float, services_ms: float) -> dict[str, float]:
    """A 100,000 x 100,000 px slide at 40x read at PCam's resolution, scored at the GPU's rate, with the
    client and service CPU per tile measured here."""
    side = SLIDE_40X_SIDE * SCAN_40X_MPP / PCAM_MPP
    cells = (side / 32) ** 2
    tiles = cells * TISSUE_FRACTION
    return {
        "side_at_pcam_resolution_px": round(side),
        "cells": round(cells),
        "tissue_fraction_assumed": TISSUE_FRACTION,
        "tiles": round(tiles),
        "gpu_tiles_per_s_assumed": GPU_TILES_PER_S,
        "seconds_at_gpu_rate": round(tiles / GPU_TILES_PER_S, 1),
        "client_cores_at_gpu_rate": round(client_ms * GPU_TILES_PER_S / 1000, 1),
        "service_cores_at_gpu_rate": round(services_ms * GPU_TILES_PER_S / 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(2304, 2880), help="section (height, width) px")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="gateway requests in flight (more than the CPU stack absorbs runs into its deadlines)",
    )
    args = parser.parse_args()

    runs: dict[str, list[Run]] = {"reader only": [], "in-process": [], "stack": []}
    with tempfile.TemporaryDirectory(prefix="pcam-bench-slide-") as work:
        slide = write_synthetic_slide(Path(work) / "section.tiff", size=tuple(args.size), seed=0).path
        local = LocalScorer(args.repository, OPERATING_POINT)
        with (
            local_stack(args.repository, ROOT / ".venv-triton", Path(work) / "stack") as stack,
            # No retries: a refused request fails the run instead of being measured twice.
            PCamClient(stack.config.url("gateway"), max_retries=0, max_batch=args.batch) as client,
        ):
            remote = gateway_scorer(client, OPERATING_POINT, cache=False)
            remote(np.zeros((8, 96, 96, 3), np.uint8))  # warm every service
            local(np.zeros((8, 96, 96, 3), np.uint8))
            for _ in range(args.rounds):
                runs["reader only"].append(scored(slide, no_work, 1, args.batch))
                runs["in-process"].append(scored(slide, local, 1, args.batch))
                runs["stack"].append(scored(slide, remote, args.concurrency, args.batch, stack))

    rates = {name: statistics.median(r.per_second for r in rs) for name, rs in runs.items()}
    client_ms = {name: per_tile_ms(rs, lambda r: r.client_cpu_s) for name, rs in runs.items()}
    stack_runs = runs["stack"]
    process_ms = {
        name: per_tile_ms(stack_runs, lambda r, n=name: r.stack_cpu_s[n])
        for name in stack_runs[0].stack_cpu_s
    }
    services_ms = round(sum(process_ms[s] for s in SERVICES), 3)
    tiles = stack_runs[0].tiles
    cells = -(-args.size[0] // 32) * -(-args.size[1] // 32)
    rows = [
        [name, f"{rates[name]:.0f}", round(rates[name] / rates["in-process"], 2), client_ms[name]]
        for name in runs
    ]
    write(
        "slides",
        f"One slide, {tiles} tissue tiles of {cells} cells: tiles/s and the slide client's CPU per tile",
        ["scorer", "tiles/s", "x in-process", "this process CPU ms per tile (in-process: all of it)"],
        rows,
        {
            "rounds": args.rounds,
            "tiles": tiles,
            "concurrency": args.concurrency,
            "batch": args.batch,
            "tiles_per_s": rates,
            "client_cpu_ms_per_tile": client_ms,
            "stack_cpu_ms_per_tile": {**process_ms, "services": services_ms, LOAD_CLIENT: client_ms["stack"]},
            "tissue_fraction": round(tiles / cells, 3),
            "whole_slide": whole_slide(client_ms["stack"], services_ms),
        },
    )
    print(f"CPU ms per tile through the stack: {process_ms} (services {services_ms})")


if __name__ == "__main__":
    main()
