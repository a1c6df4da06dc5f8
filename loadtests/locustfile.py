"""Locust scenarios against the PCam gateway, with an SLO gate on the exit code. Research use only.

Pick a scenario by user class (positional arguments of `locust`; none given runs all four):

- `ColdUser`: POST /v1/predict with a patch no one sent before (request name `cold`): a full
  preprocess + ensemble + Triton computation every time.
- `HotUser`: POST /v1/predict over a small fixed set of patches, warmed once per process (`warmup`),
  then answered from the result cache (`hot`; an answer without `cached: true` is a failure).
- `MixedUser`: `hot` with probability `--hot-ratio` (0.8), `cold` otherwise.
- `BatchUser`: POST /v1/predict/batch with `--batch-size` (8) new patches (`batch`).

    locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 60s --host http://127.0.0.1:8080 ColdUser

Options (custom arguments, each also read from an environment variable; `locust --help` does not
show them) and the SLO gate: docs/loadtests.md. This file only wires Locust; the logic lives in
`loadtests.patches`, `loadtests.checks` and `loadtests.slo`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gevent.lock import Semaphore
from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

# Locust imports this file by path; the repository root makes `loadtests` importable however it is run.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import checks, patches, slo  # noqa: E402

logger = logging.getLogger("loadtests")
MAX_HOT_SET = len(list(patches.PATCHES_DIR.glob("*.png")))


def _int_between(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], not {text}")
    return value


def _name_slo(text: str) -> str:
    try:
        slo.parse_name_slo(text, slo.Thresholds())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    env = "PCAM_LOADTEST_"
    parser.add_argument(
        "--api-key", env_var="PCAM_API_KEY", default="", is_secret=True, help="sent as X-API-Key"
    )
    parser.add_argument("--operating-point", env_var=f"{env}OPERATING_POINT", default="balanced")
    parser.add_argument(
        "--batch-size", env_var=f"{env}BATCH_SIZE", type=_int_between(1, 256), default=8, help="BatchUser"
    )
    parser.add_argument(
        "--hot-set-size",
        env_var=f"{env}HOT_SET_SIZE",
        type=_int_between(1, MAX_HOT_SET),
        default=8,
        help="patches in the cached set (HotUser, MixedUser)",
    )
    parser.add_argument(
        "--hot-ratio", env_var=f"{env}HOT_RATIO", type=_ratio, default=0.8, help="MixedUser's share of hot"
    )
    parser.add_argument(
        "--user-rps",
        env_var=f"{env}USER_RPS",
        type=_non_negative,
        default=0.0,
        help="requests per second per user; 0: closed loop, the next request as soon as one answers",
    )
    parser.add_argument(
        "--slo-p95-ms", env_var=f"{env}SLO_P95_MS", type=_non_negative, default=slo.DEFAULT_P95_MS
    )
    parser.add_argument(
        "--slo-p99-ms", env_var=f"{env}SLO_P99_MS", type=_non_negative, default=slo.DEFAULT_P99_MS
    )
    parser.add_argument(
        "--slo-error-ratio", env_var=f"{env}SLO_ERROR_RATIO", type=_ratio, default=slo.DEFAULT_ERROR_RATIO
    )
    parser.add_argument(
        "--slo-name",
        action="append",
        type=_name_slo,
        default=[],
        metavar="NAME:p95=MS,p99=MS,errors=RATIO",
        help="thresholds for one request name (cold, hot, batch, warmup); repeatable",
    )
    parser.add_argument(
        "--slo-report", env_var=f"{env}SLO_REPORT", default="", help="write the SLO verdict as JSON here"
    )


def _options(environment: Environment) -> argparse.Namespace:
    parsed = environment.parsed_options
    if parsed is None:  # Locust used as a library: the command-line defaults
        parsed = argparse.Namespace(
            api_key="",
            operating_point="balanced",
            batch_size=8,
            hot_set_size=8,
            hot_ratio=0.8,
            user_rps=0.0,
        )
    return parsed


class _HotSet:
    """The cached patches of this process, sent once (request name `warmup`) before the first hot request."""

    def __init__(self) -> None:
        self._lock = Semaphore()
        self._patches: list[patches.Patch] | None = None

    def warm(self, user: GatewayUser, size: int) -> list[patches.Patch]:
        with self._lock:  # the other users of this process wait for the first one's warm-up
            if self._patches is None:
                hot = patches.load_files(count=size)
                if all([user.predict(p, "warmup", expect_cached=None) for p in hot]):
                    self._patches = hot
                return hot  # not remembered after a failed warm-up: the next user tries again
            return self._patches


_HOT_SET = _HotSet()
_SOURCES: list[tuple[str, Any]] = []


def _sources() -> list[tuple[str, Any]]:
    if not _SOURCES:
        _SOURCES.extend(patches.load_sources())
    return _SOURCES


class GatewayUser(FastHttpUser):
    """Shared plumbing: options, headers, a pool of unique patches, validated requests."""

    abstract = True

    def on_start(self) -> None:
        self.options = _options(self.environment)
        self.headers = {"x-api-key": self.options.api_key} if self.options.api_key else {}
        self.query = "?" + urlencode({"operating_point": self.options.operating_point})
        self.cold_patches = patches.UniquePatches(_sources())
        self._pace = constant_throughput(self.options.user_rps) if self.options.user_rps else None

    def wait_time(self) -> float:
        return self._pace(self) if self._pace else 0.0

    def predict(self, patch: patches.Patch, name: str, expect_cached: bool | None) -> bool:
        """POST /v1/predict (multipart `file`); True when the answer validated."""
        body, content_type = patches.multipart("file", [patch])
        with self.client.post(
            f"/v1/predict{self.query}",
            data=body,
            headers={**self.headers, "content-type": content_type},
            name=name,
            catch_response=True,
        ) as response:
            result, reason = checks.parse(
                response.status_code, response.content, getattr(response, "error", None)
            )
            reason = reason or checks.check_prediction(result, expect_cached)
            if reason:
                response.failure(reason)
            else:
                response.success()
            return reason is None

    def predict_batch(self, uploads: list[patches.Patch], name: str) -> bool:
        """POST /v1/predict/batch (multipart `files`); True when every result validated."""
        body, content_type = patches.multipart("files", uploads)
        with self.client.post(
            f"/v1/predict/batch{self.query}",
            data=body,
            headers={**self.headers, "content-type": content_type},
            name=name,
            catch_response=True,
        ) as response:
            payload, reason = checks.parse(
                response.status_code, response.content, getattr(response, "error", None)
            )
            reason = reason or checks.check_batch(payload, len(uploads), expect_cached=False)
            if reason:
                response.failure(reason)
            else:
                response.success()
            return reason is None

    def warm_hot_set(self) -> None:
        self.hot_patches = _HOT_SET.warm(self, self.options.hot_set_size)

    def cold(self) -> None:
        self.predict(next(self.cold_patches), "cold", expect_cached=False)

    def hot(self) -> None:
        self.predict(random.choice(self.hot_patches), "hot", expect_cached=True)


class ColdUser(GatewayUser):
    """Every request a patch never sent before: no cache hit possible."""

    @task
    def cold_predict(self) -> None:
        self.cold()


class HotUser(GatewayUser):
    """A small fixed set of patches, warmed once: every request must be a cache hit."""

    def on_start(self) -> None:
        super().on_start()
        self.warm_hot_set()

    @task
    def hot_predict(self) -> None:
        self.hot()


class MixedUser(GatewayUser):
    """Hot with probability `--hot-ratio`, cold otherwise."""

    def on_start(self) -> None:
        super().on_start()
        self.warm_hot_set()

    @task
    def mixed_predict(self) -> None:
        if random.random() < self.options.hot_ratio:
            self.hot()
        else:
            self.cold()


class BatchUser(GatewayUser):
    """`--batch-size` new patches per request to /v1/predict/batch."""

    @task
    def batch_predict(self) -> None:
        self.predict_batch(self.cold_patches.take(self.options.batch_size), "batch")


def _measured(entry: Any) -> slo.Measured:
    return slo.Measured(
        name=entry.name,
        requests=entry.num_requests,
        failures=entry.num_failures,
        p95_ms=float(entry.get_response_time_percentile(0.95)),
        p99_ms=float(entry.get_response_time_percentile(0.99)),
    )


@events.quitting.add_listener
def slo_gate(environment: Environment, **_kwargs: Any) -> None:
    """Sets the exit code from the SLOs (1 when one fails) and writes `--slo-report`; master/local only."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    opts = environment.parsed_options
    thresholds = slo.Thresholds(opts.slo_p95_ms, opts.slo_p99_ms, opts.slo_error_ratio)
    name_thresholds = dict(slo.parse_name_slo(text, thresholds) for text in opts.slo_name)
    stats = environment.stats
    total = _measured(stats.total)
    per_name = [_measured(entry) for entry in stats.entries.values()]
    exceptions = sum(e["count"] for e in environment.runner.exceptions.values()) if environment.runner else 0
    violations = slo.gate(total, thresholds, per_name, name_thresholds, exceptions=exceptions)
    for violation in violations:
        logger.error("SLO failed: %s", violation)
    if not violations:
        logger.info(
            "SLOs met: %d requests, p95 %g ms, p99 %g ms, error ratio %.4f",
            total.requests,
            total.p95_ms,
            total.p99_ms,
            total.error_ratio,
        )
    environment.process_exit_code = 1 if violations else 0
    if opts.slo_report:
        extra = {
            "user_classes": sorted(c.__name__ for c in environment.user_classes),
            "host": environment.host,
            "rps": stats.total.total_rps,
            "median_ms": stats.total.median_response_time,
            "avg_ms": stats.total.avg_response_time,
            "max_ms": stats.total.max_response_time,
            "exceptions": exceptions,
            "options": {
                "operating_point": opts.operating_point,
                "batch_size": opts.batch_size,
                "hot_set_size": opts.hot_set_size,
                "hot_ratio": opts.hot_ratio,
                "user_rps": opts.user_rps,
                "users": opts.num_users,
            },
        }
        document = slo.report(total, thresholds, violations, per_name, name_thresholds, extra)
        path = Path(opts.slo_report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
