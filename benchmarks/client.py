"""HTTP load client for the benchmarks (run as its own process: gevent patches the stdlib).

    python -m benchmarks.client URL REQUESTS.pickle --concurrency 50 [--expect-cached true|false]
    python -m benchmarks.client URL REQUESTS.pickle --rate 120 --duration 60 [--concurrency 512]

REQUESTS.pickle holds a list of (method, path, body or None, content type, headers) tuples.

Closed loop (default): sent in order by `concurrency` clients on keep-alive connections; prints JSON:
per-request seconds (request order), the wall time and the CPU seconds this process spent sending them.

Open loop (`--rate`): request i is due at i / rate seconds whatever the answers before it, for
`duration` seconds (the list is cycled), on a pool of up to `concurrency` connections. Latency counts
from the due time, so time spent waiting for a connection is the server's (no coordinated omission).
Prints every request's due time, latency, status and Retry-After; any status is recorded, none fails.
geventhttpclient (Locust's FastHttpUser client) because httpx's connection pool, not the server, caps
at a few hundred requests/s with 50 concurrent connections on this machine.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 (after monkey-patching, as gevent requires)
import json  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402
from geventhttpclient.url import URL  # noqa: E402

Request = tuple[str, str, bytes | None, str, dict[str, str]]


def run(url: str, requests: list[Request], concurrency: int, expect_cached: bool | None) -> dict:
    """Send every request once; raise on a non-200 answer or an unexpected `cached` flag."""
    base = URL(url)
    seconds = [0.0] * len(requests)
    queue = iter(range(len(requests)))

    def one_client() -> None:
        client = HTTPClient.from_url(base, concurrency=1, network_timeout=120, connection_timeout=10)
        try:
            for i in queue:
                method, path, body, content_type, extra = requests[i]
                headers = {"content-type": content_type, **extra} if body is not None else dict(extra)
                began = time.perf_counter()
                response = client.request(method, path, body=body, headers=headers)
                payload = response.read()
                seconds[i] = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {payload[:200]!r}")
                if expect_cached is not None and _cached(json.loads(payload)) != {expect_cached}:
                    raise RuntimeError(f"{method} {path}: expected cached={expect_cached}: {payload[:200]!r}")
        finally:
            client.close()

    start, cpu = time.perf_counter(), _cpu_seconds()
    workers = [gevent.spawn(one_client) for _ in range(concurrency)]
    gevent.joinall(workers, raise_error=True)
    return {"seconds": seconds, "wall_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu}


def open_loop(url: str, requests: list[Request], rate: float, duration_s: float, connections: int) -> dict:
    """Send requests at a fixed rate for `duration_s`, recording each answer (see the module docstring)."""
    client = HTTPClient.from_url(
        URL(url), concurrency=connections, network_timeout=120, connection_timeout=10
    )
    total = int(rate * duration_s)
    due, latency = [i / rate for i in range(total)], [0.0] * total
    status, retry_after = [0] * total, [""] * total

    def one(i: int, start: float) -> None:
        method, path, body, content_type, extra = requests[i % len(requests)]
        headers = {"content-type": content_type, **extra} if body is not None else dict(extra)
        try:
            response = client.request(method, path, body=body, headers=headers)
            response.read()
            status[i], retry_after[i] = response.status_code, response.get("retry-after") or ""
        except Exception:  # noqa: BLE001 (a connection error is an outcome to record, status 0)
            status[i] = 0
        latency[i] = time.perf_counter() - start - due[i]

    start, cpu = time.perf_counter(), _cpu_seconds()
    sent = []
    for i in range(total):
        gevent.sleep(max(0.0, start + due[i] - time.perf_counter()))
        sent.append(gevent.spawn(one, i, start))
    gevent.joinall(sent)
    client.close()
    return {
        "due_s": due,
        "seconds": latency,
        "status": status,
        "retry_after": retry_after,
        "wall_s": time.perf_counter() - start,
        "cpu_s": _cpu_seconds() - cpu,
    }


def _cpu_seconds() -> float:
    """This process's CPU time so far: the load's share excludes starting up and reading the requests."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cached(answer: dict) -> set[bool]:
    """The `cached` flags of a prediction, of every result of a batch, or of every patch of a tensor
    answer (KServe v2: the count of cached patches among its outputs')."""
    if "outputs" in answer:
        patches, cached = len(answer["outputs"][0]["data"]), answer["parameters"]["cached"]
        return {True} if cached == patches else {False} if cached == 0 else {True, False}
    return {result["cached"] for result in answer.get("results", [answer])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("requests", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--expect-cached", choices=["true", "false"])
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="open loop: seconds")
    args = parser.parse_args()
    requests = pickle.loads(args.requests.read_bytes())  # written by benchmarks.load, never by a user
    if args.rate:
        json.dump(open_loop(args.url, requests, args.rate, args.duration, args.concurrency), sys.stdout)
        return
    cached = None if args.expect_cached is None else args.expect_cached == "true"
    json.dump(run(args.url, requests, args.concurrency, cached), sys.stdout)


if __name__ == "__main__":
    main()
