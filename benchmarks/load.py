"""Timing for the serving benchmark: in-process calls, and HTTP load from the client process."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from loadtests.patches import Patch, multipart

T = TypeVar("T")


@dataclass(frozen=True)
class Latencies:
    """Seconds per call, the wall time of the whole run, and the CPU seconds the load client spent on it."""

    seconds: np.ndarray
    wall_s: float
    client_cpu_s: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.seconds) / self.wall_s

    def ms(self, percentile: float) -> float:
        return float(np.percentile(self.seconds, percentile) * 1000)


def timed(call: Callable[[T], object], items: Sequence[T]) -> Latencies:
    """`call(item)` for each item in turn, each timed (one caller, nothing else in flight)."""
    seconds = np.empty(len(items))
    start = time.perf_counter()
    for i, item in enumerate(items):
        began = time.perf_counter()
        call(item)
        seconds[i] = time.perf_counter() - began
    return Latencies(seconds, time.perf_counter() - start)


Request = tuple[str, str, bytes | None, str, dict[str, str]]  # method, path, body, content type, headers


def predictions(bodies: Sequence[bytes]) -> list[Request]:
    """One POST /v1/predict per PNG body (a raw image upload)."""
    return [("POST", "/v1/predict", body, "image/png", {}) for body in bodies]


def batch_predictions(batches: Sequence[Sequence[bytes]]) -> list[Request]:
    """One POST /v1/predict/batch per batch of PNG bodies (multipart `files`)."""
    requests: list[Request] = []
    for bodies in batches:
        body, content_type = multipart(
            "files", [Patch(f"patch-{i}.png", data) for i, data in enumerate(bodies)]
        )
        requests.append(("POST", "/v1/predict/batch", body, content_type, {}))
    return requests


def tensor_predictions(batches: Sequence[np.ndarray]) -> list[Request]:
    """One KServe v2 request per uint8 (N, 96, 96, 3) batch, as tritonclient's HTTP client builds it:
    binary pixels in, outputs as JSON (so the load client can check each answer's `cached` count)."""
    import tritonclient.http as triton_http

    requests: list[Request] = []
    for pixels in batches:
        image = triton_http.InferInput("image", list(pixels.shape), "UINT8")
        image.set_data_from_numpy(pixels)
        outputs = [
            triton_http.InferRequestedOutput(name, binary_data=False) for name in ("probability", "label")
        ]
        body, header_length = triton_http.InferenceServerClient.generate_request_body(
            [image], outputs=outputs
        )
        headers = {"Inference-Header-Content-Length": str(header_length)}
        requests.append(("POST", "/v2/models/pcam/infer", body, "application/octet-stream", headers))
    return requests


def gets(path: str, count: int) -> list[Request]:
    return [("GET", path, None, "", {})] * count


@dataclass(frozen=True)
class OpenLoopRun:
    """Every request of an open-loop run: when it was due, its latency from then, status, Retry-After."""

    due_s: np.ndarray
    seconds: np.ndarray
    status: np.ndarray
    retry_after: list[str]
    wall_s: float
    client_cpu_s: float


def http_load(url: str, requests: list[Request], concurrency: int, cached: bool | None = None) -> Latencies:
    """Send `requests` from `concurrency` closed-loop clients (benchmarks.client, its own process); fail
    on any non-200 answer, or on a prediction whose `cached` flag is not `cached` (None: not checked)."""
    flags = ["--concurrency", str(concurrency)]
    if cached is not None:
        flags += ["--expect-cached", str(cached).lower()]
    result = _client(url, requests, flags)
    return Latencies(np.asarray(result["seconds"]), result["wall_s"], result["cpu_s"])


def open_loop_load(
    url: str, requests: list[Request], rate: float, duration_s: float, connections: int
) -> OpenLoopRun:
    """Send `requests` (cycled) at `rate` per second for `duration_s` whatever the answers (benchmarks.client's
    open loop, its own process), recording every outcome."""
    flags = ["--rate", str(rate), "--duration", str(duration_s), "--concurrency", str(connections)]
    result = _client(url, requests, flags)
    return OpenLoopRun(
        np.asarray(result["due_s"]),
        np.asarray(result["seconds"]),
        np.asarray(result["status"]),
        result["retry_after"],
        result["wall_s"],
        result["cpu_s"],
    )


def _client(url: str, requests: list[Request], flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="pcam-load-") as folder:
        path = Path(folder) / "requests.pickle"
        path.write_bytes(pickle.dumps(requests))
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.client", url, str(path), *flags],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"load client failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)
