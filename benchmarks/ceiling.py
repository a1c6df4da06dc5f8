"""The platform's ceiling: what the stack serves when the model costs next to nothing.

    python -m benchmarks.ceiling [--repository build/ceiling/model_repository] [--rounds 3]

Builds, if absent, a release of trivial members (training/configs/ceiling.yaml: the demo's shape,
members that map a patch's mean colour to a logit) with the real `pcam build-repository`, starts the
local stack on it, and drives it with never-sent tensor batches (KServe v2, pixels in), then with
never-sent single-patch PNG uploads. Reports patches/s and every process's CPU per patch from /proc
(the load client's own CPU while sending included), and the arithmetic the platform exists for: the
service cores one GPU would need to be fed at `--gpu-rate` patches/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.load import predictions, tensor_predictions
from benchmarks.report import write
from benchmarks.serving import LOAD_CLIENT, ROOT, SERVICES, UniqueBodies, medians, uncached_load
from devstack.repository import build_repository
from loadtests.run_local import local_stack

CONFIG = ROOT / "training" / "configs" / "ceiling.yaml"
TARGET_PATCHES_PER_S = 3000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "ceiling" / "model_repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="patches per tensor request")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="clients sending tensor batches")
    parser.add_argument("--batch-requests", type=int, default=60, help="tensor requests per round")
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending single patches")
    parser.add_argument("--requests", type=int, default=1000, help="single-patch requests per round")
    parser.add_argument("--gpu-rate", type=int, default=20000, help="patches/s one GPU serves")
    args = parser.parse_args()

    if not (args.repository / "release.json").is_file():
        build_repository(CONFIG, args.repository)
    patches = UniqueBodies()
    tensor_rates, single_rates = [], []
    tensor_cpu: dict[str, list[float]] = {}
    single_cpu: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pcam-ceiling-") as work,
        local_stack(args.repository, ROOT / ".venv-triton", Path(work)) as stack,
    ):
        warm = tensor_predictions([patches.pixels(args.batch) for _ in range(8)])
        uncached_load(stack, warm, 8 * args.batch, args.batch_concurrency, {})
        for _ in range(args.rounds):
            count = args.batch_requests * args.batch
            tensors = tensor_predictions([patches.pixels(args.batch) for _ in range(args.batch_requests)])
            load = uncached_load(stack, tensors, count, args.batch_concurrency, tensor_cpu)
            tensor_rates.append(count / load.wall_s)
            singles = predictions(patches.take(args.requests))
            load = uncached_load(stack, singles, args.requests, args.concurrency, single_cpu)
            single_rates.append(args.requests / load.wall_s)

    loads = {
        f"{args.batch_concurrency} clients, tensor batches of {args.batch}": (
            tensor_rates,
            medians(tensor_cpu),
        ),
        f"{args.concurrency} single-patch clients": (single_rates, medians(single_cpu)),
    }
    rows = []
    for name, (rates, cpu) in loads.items():
        services_ms = sum(cpu[s] for s in SERVICES)
        rows.append(
            [
                name,
                round(statistics.median(rates)),
                *(cpu[s] for s in SERVICES),
                round(services_ms, 3),
                cpu["triton"],
                cpu[LOAD_CLIENT],
                round(args.gpu_rate * services_ms / 1000, 1),
            ]
        )
    write(
        "ceiling",
        f"Platform ceiling: trivial members, CPU ms per patch per process; service cores to feed one GPU "
        f"at {args.gpu_rate:,} patches/s (target: tensor batches >= {TARGET_PATCHES_PER_S:,} patches/s)",
        [
            "load",
            "patches/s",
            *SERVICES,
            "services",
            "triton",
            LOAD_CLIENT,
            f"service cores at {args.gpu_rate:,}/s",
        ],
        rows,
        {
            "rounds": args.rounds,
            "config": str(CONFIG.relative_to(ROOT)),
            "rates": {name: rates for name, (rates, _) in loads.items()},
            "cpu_ms_per_patch": {name: cpu for name, (_, cpu) in loads.items()},
            "target_patches_per_s": TARGET_PATCHES_PER_S,
        },
    )


if __name__ == "__main__":
    main()
