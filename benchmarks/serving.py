"""What serving costs on top of the models: the whole stack against the same ensemble in this process.

    python -m benchmarks.serving [--repository model_repository] [--rounds 3]

Starts the local stack (Redis, Triton, preprocess, ensemble, gateway; rate limit off) on free ports
with the release in `--repository`, then measures, each side by side in one run (rounds alternate so
that noise on a shared machine hits both sides alike):

- overhead: one uncached patch at a time through the gateway vs the same work in-process at batch 1
  (decode + validate + Macenko with the release's reference, every member's ONNX graph in
  onnxruntime, the release's combine rule: `training.predict.LocalPredictor`, the serving code);
- throughput: uncached single-patch requests from `--concurrency` clients vs the in-process pipeline
  on batches of `--batch` patches, on the same cores; with the batch sizes Triton formed (its metrics);
- cache hits: requests/s and p99 with `--cache-concurrency` clients on warmed patches, beside the
  gateway's `/healthz` at the same concurrency (the floor: HTTP, uvicorn and this client, no work);
- CPU per uncached patch of every process (and of the load client), from /proc: under the
  single-patch load, under batch uploads, and under tensor batches (KServe v2, pixels in).

Every gateway answer is checked (200, and `cached` false for the uncached runs, true for the hits).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import (
    Latencies,
    Request,
    batch_predictions,
    gets,
    http_load,
    predictions,
    tensor_predictions,
    timed,
)
from benchmarks.report import write
from devstack import groups
from devstack.stack import LocalStack
from loadtests.patches import UniquePatches, load_sources
from loadtests.run_local import local_stack
from pcam_core.release import DEFAULT_OPERATING_POINT
from services.preprocess.pipeline import preprocess_uploads
from training.predict import LocalPredictor

ROOT = Path(__file__).resolve().parents[1]
LOAD_CLIENT = "load client"
SERVICES = ("gateway", "preprocess", "ensemble")
TRITON_BATCH = re.compile(
    r'^(nv_inference_count|nv_inference_exec_count)\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', re.M
)


class UniqueBodies:
    """PNG bytes of real patches never sent before (loadtests' variants): the cache cannot answer them."""

    def __init__(self) -> None:
        self.variants = UniquePatches(load_sources())

    def take(self, count: int) -> list[bytes]:
        return [patch.data for patch in self.variants.take(count)]

    def pixels(self, count: int) -> np.ndarray:
        """`count` never-sent variants as uint8 (N, 96, 96, 3) pixels (the tensor input)."""
        return self.variants.pixels(count)


def in_process(predictor: LocalPredictor, uploads: list[bytes]) -> np.ndarray:
    """The serving path without the services: preprocess's own function, then the members and the rule."""
    batch = preprocess_uploads(uploads, predictor.preprocessing)
    answer = predictor.score(batch.images, DEFAULT_OPERATING_POINT)
    return np.array([result.probability for result in answer.results])


def triton_batches(stack: LocalStack) -> dict[str, tuple[float, float]]:
    """(inferences, executions) per model from Triton's metrics: their ratio is the mean batch formed."""
    text = httpx.get(f"http://127.0.0.1:{stack.config.ports.triton_metrics}/metrics", timeout=10).text
    counts: dict[str, list[float]] = {}
    for name, model, value in TRITON_BATCH.findall(text):
        counts.setdefault(model, [0.0, 0.0])[name == "nv_inference_exec_count"] += float(value)
    return {model: (pair[0], pair[1]) for model, pair in counts.items()}


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time (user + system) so far of each stack process with its children (Triton's backend stubs)."""
    return {name: groups.cpu_seconds(process.popen.pid) for name, process in stack.processes.items()}


def measured_load(
    stack: LocalStack,
    requests: list[Request],
    units: int,
    concurrency: int,
    cpu: dict[str, list[float]],
    cached: bool | None = False,
) -> Latencies:
    """Send requests (answers checked as `http_load` does) and append to `cpu` the milliseconds each
    stack process, and the load client while sending, spent per unit (patch, or request)."""
    before = cpu_seconds(stack)
    latencies = http_load(stack.config.url("gateway"), requests, concurrency, cached=cached)
    after = cpu_seconds(stack)
    for name, seconds in after.items():
        cpu.setdefault(name, []).append((seconds - before[name]) * 1000 / units)
    cpu.setdefault(LOAD_CLIENT, []).append(latencies.client_cpu_s * 1000 / units)
    return latencies


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def merged(runs: list[Latencies]) -> Latencies:
    """All rounds as one sample: every latency, the summed wall time."""
    return Latencies(np.concatenate([r.seconds for r in runs]), sum(r.wall_s for r in runs))


def mean_batch(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Inferences per execution per model between two scrapes of Triton's metrics."""
    formed = {}
    for model, (inferences, executions) in after.items():
        earlier = before.get(model, (0.0, 0.0))
        formed[model] = round((inferences - earlier[0]) / max(1.0, executions - earlier[1]), 2)
    return formed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="uncached one-at-a-time requests per round")
    parser.add_argument(
        "--load-requests", type=int, default=640, help="uncached requests per throughput round"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="in-process batch size for throughput")
    parser.add_argument("--batch-requests", type=int, default=10, help="batch requests per round (latency)")
    parser.add_argument(
        "--batch-concurrency", type=int, default=4, help="clients sending batch uploads (CPU per patch)"
    )
    parser.add_argument("--cache-concurrency", type=int, default=50)
    parser.add_argument("--cache-requests", type=int, default=3000)
    parser.add_argument(
        "--threads", type=int, default=1, help="in-process onnxruntime threads per member (Triton's model: 1)"
    )
    args = parser.parse_args()

    patches = UniqueBodies()
    predictor = LocalPredictor(args.repository, threads=args.threads)
    in_process(predictor, patches.take(4))  # compile the Macenko kernels, warm onnxruntime
    local_single, gateway_single, local_rates, gateway_rates, cache, floor = [], [], [], [], [], []
    cpu_per_request: dict[str, list[float]] = {}
    cpu_per_batched_patch: dict[str, list[float]] = {}
    cpu_per_tensor_patch: dict[str, list[float]] = {}
    cpu_per_hit: dict[str, list[float]] = {}
    cpu_per_probe: dict[str, list[float]] = {}
    local_batch: list[Latencies] = []
    gateway_batch: list[Latencies] = []
    with (
        tempfile.TemporaryDirectory(prefix="pcam-bench-") as work,
        local_stack(args.repository, ROOT / ".venv-triton", Path(work)) as stack,
    ):
        url = stack.config.url("gateway")
        http_load(url, predictions(patches.take(64)), 8, cached=False)  # warm every service
        before = triton_batches(stack)
        for _ in range(args.rounds):
            local_single.append(
                timed(lambda body: in_process(predictor, [body]), patches.take(args.requests))
            )
            gateway_single.append(http_load(url, predictions(patches.take(args.requests)), 1, cached=False))

            bodies = patches.take(args.load_requests)
            chunks = [bodies[i : i + args.batch] for i in range(0, len(bodies), args.batch)]
            local_rates.append(len(bodies) / timed(lambda chunk: in_process(predictor, chunk), chunks).wall_s)

            batches = [patches.take(args.batch) for _ in range(args.batch_requests)]
            local_batch.append(timed(lambda batch: in_process(predictor, batch), batches))
            requests = batch_predictions([patches.take(args.batch) for _ in range(args.batch_requests)])
            gateway_batch.append(http_load(url, requests, 1, cached=False))
            singles = predictions(patches.take(args.load_requests))
            load = measured_load(stack, singles, args.load_requests, args.concurrency, cpu_per_request)
            gateway_rates.append(load.per_second)
            batches = args.load_requests // args.batch
            uploads = batch_predictions([patches.take(args.batch) for _ in range(batches)])
            measured_load(stack, uploads, batches * args.batch, args.batch_concurrency, cpu_per_batched_patch)
            tensors = tensor_predictions([patches.pixels(args.batch) for _ in range(batches)])
            measured_load(stack, tensors, batches * args.batch, args.batch_concurrency, cpu_per_tensor_patch)
        formed = mean_batch(before, triton_batches(stack))

        hot = patches.take(16)
        http_load(url, predictions(hot), 4, cached=False)  # store them
        hits = predictions([hot[i % len(hot)] for i in range(args.cache_requests)])
        for _ in range(args.rounds):
            count, clients = args.cache_requests, args.cache_concurrency
            cache.append(measured_load(stack, hits, count, clients, cpu_per_hit, cached=True))
            floor.append(measured_load(stack, gets("/healthz", count), count, clients, cpu_per_probe, None))

    local, gateway = merged(local_single), merged(gateway_single)
    cpu, cpu_batched, cpu_tensor = map(
        medians, (cpu_per_request, cpu_per_batched_patch, cpu_per_tensor_patch)
    )
    local_rate, gateway_rate = statistics.median(local_rates), statistics.median(gateway_rates)
    hit, bare = merged(cache), merged(floor)
    hit_cpu, probe_cpu = medians(cpu_per_hit), medians(cpu_per_probe)
    batch_gateway, batch_local = merged(gateway_batch), merged(local_batch)
    rows = [
        [
            "overhead p50 (ms)",
            "1 uncached patch",
            gateway.ms(50),
            local.ms(50),
            gateway.ms(50) / local.ms(50),
            "<= 1.5",
        ],
        [
            "overhead p95 (ms)",
            "1 uncached patch",
            gateway.ms(95),
            local.ms(95),
            gateway.ms(95) / local.ms(95),
            "<= 1.5",
        ],
        [
            f"batch of {args.batch} p50 (ms)",
            "1 uncached batch",
            batch_gateway.ms(50),
            batch_local.ms(50),
            batch_gateway.ms(50) / batch_local.ms(50),
            "GPU: < 200 ms",
        ],
        [
            "throughput (patches/s)",
            f"{args.concurrency} clients vs batch {args.batch}",
            gateway_rate,
            local_rate,
            gateway_rate / local_rate,
            ">= 0.9",
        ],
        [
            "cache hits (req/s)",
            f"{args.cache_concurrency} clients",
            hit.per_second,
            bare.per_second,
            hit.per_second / bare.per_second,
            ">= 0.5 (vs /healthz)",
        ],
        [
            "cache hits p99 (ms)",
            f"{args.cache_concurrency} clients",
            hit.ms(99),
            bare.ms(99),
            hit.ms(99) / bare.ms(99),
            "vs /healthz",
        ],
        *(
            [
                f"{name} CPU per request (ms)",
                f"{args.cache_concurrency} clients",
                hit_cpu[name],
                probe_cpu[name],
                hit_cpu[name] / probe_cpu[name],
                "hits vs /healthz",
            ]
            for name in ("gateway", LOAD_CLIENT)
        ),
    ]
    rows = [
        [name, load, round(a, 2), round(b, 2), round(ratio, 2), target]
        for name, load, a, b, ratio, target in rows
    ]
    write(
        "serving",
        "Serving stack vs in-process (baseline), same run, same machine",
        ["measure", "load", "stack", "baseline", "ratio", "target"],
        rows,
        {
            "rounds": args.rounds,
            "release": predictor.manifest.release_id,
            "members": [m.name for m in predictor.manifest.members],
            "in_process_threads_per_member": args.threads,
            "triton_mean_batch_size": formed,
            "cpu_ms_per_request_under_load": cpu,
            "cache_hit_p50_ms": hit.ms(50),
            "healthz_p50_ms": bare.ms(50),
            "throughput_rounds": {"stack": gateway_rates, "in_process": local_rates},
            "versions": {
                name: version(name) for name in ("onnxruntime", "uvicorn", "fastapi", "geventhttpclient")
            },
        },
    )
    print(f"Triton mean batch size per model under {args.concurrency} clients: {formed}")
    local_cpu_ms = 1000 / statistics.median(local_rates)  # one thread: wall time is CPU time
    processes = sorted(cpu, key=lambda name: -cpu[name])
    write(
        "serving-cpu",
        f"CPU ms per uncached patch per process (in-process pipeline: {local_cpu_ms:.2f} ms per patch)",
        [
            "process",
            f"{args.concurrency} single-patch clients",
            f"{args.batch_concurrency} clients, batches of {args.batch}",
            f"{args.batch_concurrency} clients, tensor batches of {args.batch}",
        ],
        [[name, cpu[name], cpu_batched.get(name, 0.0), cpu_tensor.get(name, 0.0)] for name in processes]
        + [
            [
                "services (gateway + preprocess + ensemble)",
                *(round(sum(load[s] for s in SERVICES), 2) for load in (cpu, cpu_batched, cpu_tensor)),
            ]
        ],
        {
            "in_process_cpu_ms_per_patch": local_cpu_ms,
            "rounds": args.rounds,
            "targets_ms": {"single": 1.5, "tensor": 0.3},
        },
    )


if __name__ == "__main__":
    main()
