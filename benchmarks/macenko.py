"""Macenko throughput: the batched normalizer vs torchstain's numpy normalizer, same patches, one run;
and what the input review measures (services/preprocess/quality.py) add to it.

    python -m benchmarks.macenko [--rounds 5]

Batches of 1, 32 and 256 are drawn from the real patches in tests/data/he/patches; torchstain
normalizes the same 256 patches one by one (it has no batch API). Rounds alternate between the two
so that machine noise hits both alike; the median round is reported.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numba
import numpy as np
from PIL import Image
from torchstain.numpy.normalizers.macenko import NumpyMacenkoNormalizer

from benchmarks.report import write
from services.preprocess.quality import measure
from services.preprocess.stain import MacenkoNormalizer

PATCHES = Path(__file__).resolve().parents[1] / "tests" / "data" / "he" / "patches"
BATCH_SIZES = (1, 32, 256)
MIN_PATCHES_PER_ROUND = 256


def real_patches(count: int) -> np.ndarray:
    """`count` real patches, cycling through the folder in name order."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(PATCHES.glob("*.png"))]
    return np.stack([images[i % len(images)] for i in range(count)])


def patches_per_second(run: Callable[[], object], patches: int) -> float:
    start = time.perf_counter()
    run()
    return patches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    patches = real_patches(max(BATCH_SIZES))
    ours = MacenkoNormalizer()
    reference = NumpyMacenkoNormalizer()
    ours.normalize(patches[:2])  # compile or load the kernels outside the timing

    def ours_at(batch_size: int, measured: bool = False) -> Callable[[], object]:
        """Normalize in batches; measured: then measure the input as preprocess does for the review flags."""
        batches = [patches[i : i + batch_size] for i in range(0, MIN_PATCHES_PER_ROUND, batch_size)]

        def run() -> None:
            for batch in batches:
                result = ours.normalize(batch)
                if measured:
                    measure(batch, result, ours, None)

        return run

    def torchstain_all() -> None:
        for patch in patches:
            reference.normalize(patch, stains=False)

    ours_at(2, measured=True)()  # compile the measures' kernel outside the timing too
    samples: dict[str, list[float]] = {
        "torchstain": [],
        **{f"batch {b}": [] for b in BATCH_SIZES},
        **{f"measured {b}": [] for b in BATCH_SIZES},
    }
    for _ in range(args.rounds):
        samples["torchstain"].append(patches_per_second(torchstain_all, len(patches)))
        for batch_size in BATCH_SIZES:
            samples[f"batch {batch_size}"].append(
                patches_per_second(ours_at(batch_size), MIN_PATCHES_PER_ROUND)
            )
            samples[f"measured {batch_size}"].append(
                patches_per_second(ours_at(batch_size, measured=True), MIN_PATCHES_PER_ROUND)
            )
    median = {name: statistics.median(values) for name, values in samples.items()}
    baseline = median["torchstain"]
    rows = [["torchstain (numpy, per patch)", "1", round(baseline, 1), 1.0]]
    rows += [
        [name, str(b), round(median[f"{key} {b}"], 1), round(median[f"{key} {b}"] / baseline, 2)]
        for name, key in (("MacenkoNormalizer", "batch"), ("MacenkoNormalizer + input measures", "measured"))
        for b in BATCH_SIZES
    ]
    path = write(
        "macenko",
        "Macenko normalization, real 96x96 patches (median of rounds)",
        ["implementation", "batch", "patches/s", "x torchstain"],
        rows,
        {
            "rounds": args.rounds,
            "samples_patches_per_s": samples,
            "target": "batch 256 >= 10x torchstain",
            "target_met": median["batch 256"] >= 10 * baseline,
            "measures_cost_share_batch256": 1 - median["measured 256"] / median["batch 256"],
            "versions": {name: version(name) for name in ("numpy", "numba", "torchstain")},
            "numba_threads": numba.get_num_threads(),
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
