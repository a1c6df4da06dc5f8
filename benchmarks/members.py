"""CPU latency of the production members (training/configs/pcam-gpu.yaml) at batch 1 and 32.

    python -m benchmarks.members [--repository build/pcam-gpu-smoke/model_repository]

Builds, if absent, pcam-gpu's members trained a few steps on a small synthetic set (`production_smoke`:
the profile with only what a CPU box needs changed; latency does not depend on the weights), then
times each member's served ONNX graph in onnxruntime, members in turns on the same real patches,
with one intra-op thread (as Triton's model runs it on the cpu target) and with every core. The
platform serves these members on GPUs; these figures are what a CPU fallback would cost.

The activation map's share of that cost: each served graph against the same graph cut down to the
logit and the feature distance (onnx.utils.extract_model drops the map's nodes), timed in turns with
one thread. onnxruntime computes every output of a graph whether a call asks for it or not, so this
is what every patch pays for `explain=cam` being available. `--repository` takes any model repository
(the demo release's too).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnx.utils
import yaml

from benchmarks.macenko import real_patches
from benchmarks.report import write
from devstack.repository import ensure_repository
from pcam_core.contract import FEATURE_DISTANCE_NAME, INPUT_NAME, OUTPUT_NAME
from pcam_core.release import ReleaseManifest, load_release
from training.config import resolve_config
from training.graphs import session
from training.timing import timed_in_turns

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "pcam-gpu"
DEFAULT_REPOSITORY = ROOT / "build" / "pcam-gpu-smoke" / "model_repository"


def production_smoke(path: Path) -> Path:
    """pcam-gpu with a small synthetic set and a few CPU steps per member, written to `path`: the
    architectures, their arguments, losses and augmentation stay the profile's."""
    config = yaml.safe_load(resolve_config(PROFILE).read_text())
    config.update(
        release_prefix="pcam-gpu-smoke",
        threads=2,
        data={"synthetic": {"train": 96, "valid": 64, "test": 16, "seed": 0}},
        stain={"fit_patches": 32},
        export={"formats": ["onnx"]},
        triton={
            "max_batch_size": 32,
            "max_queue_delay_microseconds": 0,
            "instance_count": 1,
            "intra_op_threads": 1,
        },
    )
    config.pop("tracking", None)
    for member in config["members"]:
        member.update(epochs=1, batch_size=16, amp=False, num_workers=0, warmup_epochs=0, patience=None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def production_repository(repository: Path) -> Path:
    """The production smoke repository, built (about two minutes on 2 cores) unless it exists."""
    root = repository.parent
    root.mkdir(parents=True, exist_ok=True)
    return ensure_repository(production_smoke(root / "config.yaml"), repository, root / "work")


def without_map(graph: Path, out: Path) -> Path:
    """The served graph cut down to the logit and the feature distance: no activation map nodes."""
    onnx.utils.extract_model(str(graph), str(out), [INPUT_NAME], [OUTPUT_NAME, FEATURE_DISTANCE_NAME])
    return out


def map_cost(repository: Path, release: ReleaseManifest, images: np.ndarray) -> list[list]:
    """Per member with an activation map: median ms with and without it, and the paired ratio."""
    rows = []
    for member in release.members:
        if member.activation_map is None:
            continue
        graph = repository / member.name / str(member.version) / "model.onnx"
        pruned = without_map(graph, repository.parent / f"{member.name}-without-map.onnx")
        timings = timed_in_turns({"with": session(graph), "without": session(pruned)}, images)
        for size, times in timings.items():
            ratio = float(np.median(times["with"] / times["without"]))
            with_ms, without_ms = float(np.median(times["with"])), float(np.median(times["without"]))
            rows.append([member.name, member.architecture, size, with_ms, without_ms, ratio])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    args = parser.parse_args()
    # The default is pcam-gpu's smoke build, made or refreshed here; any other repository is timed as is.
    release = load_release(
        production_repository(args.repository) if args.repository == DEFAULT_REPOSITORY else args.repository
    )
    images = real_patches(32)
    cores = os.cpu_count() or 1
    rows, details = [], {}
    for threads in sorted({1, cores}):
        sessions = {
            m.name: session(args.repository / m.name / str(m.version) / "model.onnx", threads)
            for m in release.members
        }
        timings = timed_in_turns(sessions, images)
        for member in release.members:
            ms = {size: float(np.median(times[member.name])) for size, times in timings.items()}
            rows.append([member.name, member.architecture, threads, ms[1], ms[32], 32_000 / ms[32]])
            details[f"{member.name}@{threads}"] = {
                f"rounds_batch{size}": len(times[member.name]) for size, times in timings.items()
            }
    write(
        "members",
        "Production members on this CPU: median ms per onnxruntime run (members in turns)",
        ["member", "architecture", "threads", "batch 1 (ms)", "batch 32 (ms)", "patches/s at 32"],
        rows,
        {"release": release.release_id, "config": f"{PROFILE}, production_smoke", "rounds": details},
    )
    write(
        "member-maps",
        "The activation map's cost: each served graph with and without it, one thread (in turns)",
        ["member", "architecture", "batch", "with map (ms)", "without (ms)", "paired ratio"],
        map_cost(args.repository, release, images),
        {"release": release.release_id},
    )


if __name__ == "__main__":
    main()
