"""The platform's ceiling: what the stack serves when the model costs next to nothing.

    python -m benchmarks.ceiling [--repository build/ceiling/model_repository] [--rounds 3]

Builds, if absent, a release of trivial members (training/configs/ceiling.yaml: the demo's shape,
members that map a patch's mean colour to a logit) with the real `pcam build-repository`, starts the
local stack on it twice (the ensemble handing patches to Triton inside its gRPC messages, and in
shared memory), and drives both, rounds alternating, with never-sent tensor batches (KServe v2, pixels
in) and never-sent single-patch PNG uploads. Reports patches/s and every process's CPU per patch from /proc
(the load client's own CPU while sending included), and the arithmetic the platform exists for: the
service cores one GPU would need to be fed at `--gpu-rate` patches/s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
from pathlib import Path

from benchmarks.load import predictions, tensor_predictions
from benchmarks.report import write
from benchmarks.serving import LOAD_CLIENT, ROOT, SERVICES, UniqueBodies, measured_load, medians
from devstack.repository import ensure_repository
from loadtests.run_local import local_stack

CONFIG = ROOT / "training" / "configs" / "ceiling.yaml"
PIXELS_TO_TRITON = {
    "in the gRPC message": {},
    "in shared memory": {"PCAM_ENSEMBLE_TRITON_SHARED_MEMORY": "true"},
}
"""The two ways the ensemble hands patches to Triton, measured side by side (two stacks, rounds alternating)."""
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

    ensure_repository(CONFIG, args.repository)
    patches = UniqueBodies()
    loads = {
        "tensor": f"{args.batch_concurrency} clients, tensor batches of {args.batch}",
        "single": f"{args.concurrency} single-patch clients",
    }
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], dict[str, list[float]]] = {}
    with contextlib.ExitStack() as running:
        stacks = {
            mode: running.enter_context(
                local_stack(
                    args.repository,
                    ROOT / ".venv-triton",
                    Path(running.enter_context(tempfile.TemporaryDirectory(prefix="pcam-ceiling-"))),
                    environment,
                )
            )
            for mode, environment in PIXELS_TO_TRITON.items()
        }
        for stack in stacks.values():
            warm = tensor_predictions([patches.pixels(args.batch) for _ in range(8)])
            measured_load(stack, warm, 8 * args.batch, args.batch_concurrency, {})
        workloads = {  # load -> (its never-sent requests, patches in them, clients)
            "tensor": (
                lambda: tensor_predictions([patches.pixels(args.batch) for _ in range(args.batch_requests)]),
                args.batch_requests * args.batch,
                args.batch_concurrency,
            ),
            "single": (lambda: predictions(patches.take(args.requests)), args.requests, args.concurrency),
        }
        for _ in range(args.rounds):
            for mode, stack in stacks.items():  # rounds alternate: noise hits both modes alike
                for load, (requests, count, clients) in workloads.items():
                    done = measured_load(stack, requests(), count, clients, cpu.setdefault((load, mode), {}))
                    rates.setdefault((load, mode), []).append(count / done.wall_s)

    rows = []
    for load, mode in itertools.product(loads, PIXELS_TO_TRITON):
        used = medians(cpu[load, mode])
        services_ms = sum(used[s] for s in SERVICES)
        rows.append(
            [
                loads[load],
                mode,
                round(statistics.median(rates[load, mode])),
                *(used[s] for s in SERVICES),
                round(services_ms, 3),
                used["triton"],
                used[LOAD_CLIENT],
                round(args.gpu_rate * services_ms / 1000, 1),
            ]
        )
    write(
        "ceiling",
        f"Platform ceiling: trivial members, CPU ms per patch per process; service cores to feed one GPU "
        f"at {args.gpu_rate:,} patches/s (target: tensor batches >= {TARGET_PATCHES_PER_S:,} patches/s)",
        [
            "load",
            "pixels to Triton",
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
            "rates": {f"{loads[load]}, {mode}": values for (load, mode), values in rates.items()},
            "target_patches_per_s": TARGET_PATCHES_PER_S,
        },
    )


if __name__ == "__main__":
    main()
