"""Closed-loop HTTP load client for the benchmarks (run as its own process: gevent patches the stdlib).

    python -m benchmarks.client URL REQUESTS.pickle --concurrency 50 [--expect-cached true|false]

REQUESTS.pickle holds a list of (method, path, body or None, content type, headers) tuples, sent in order by `concurrency`
clients on keep-alive connections; prints JSON: per-request seconds (request order), the wall time and the CPU
seconds this process spent sending them.
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
    args = parser.parse_args()
    requests = pickle.loads(args.requests.read_bytes())  # written by benchmarks.load, never by a user
    cached = None if args.expect_cached is None else args.expect_cached == "true"
    json.dump(run(args.url, requests, args.concurrency, cached), sys.stdout)


if __name__ == "__main__":
    main()
