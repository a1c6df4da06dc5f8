"""A poison release rolled out under load: its first member's new model file is corrupt.

    python -m resilience.poison_release [--repository model_repository] [--clients 3]

On a copy of the release, closed-loop clients send predictions of patches never sent before while a
release is published the way `pcam package --rolling` publishes one (new model versions beside the
serving ones, release.json replaced last, atomically), except that one member's new `model.onnx` is
garbage, so Triton cannot load it.

Judged as issue 18 asks: the release is refused and the previous one keeps serving with zero failed
requests (every answer a 200 from the previous release, before, during and after), and the refusal is
visible in metrics (`pcam_release_rejected_total` on the ensemble; the PCamReleaseRejected alert in
deploy/prometheus/pcam-rules.yml fires on it, tested by promtool).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.report import write
from benchmarks.serving import UniqueBodies
from devstack.stack import LocalStack
from loadtests.run_local import local_stack
from pcam_core.release import ReleaseManifest, load_release, write_release
from resilience.scenario import OUTPUT_DIR, ROOT, Verdict, scenario_parser

WATCH_S = 45.0
"""How long answers are watched after publishing: past the ensemble's 20 s wait for the new models,
and a retry."""
REJECTED = re.compile(r'^pcam_release_rejected_total\{[^}]*reason="not_taken_up"[^}]*\} (\S+)$', re.M)


def publish_poison(repository: Path) -> ReleaseManifest:
    """Publish the serving release again as new versions under a new id, the first member's model
    file replaced by garbage; release.json last. Returns the published manifest."""
    serving = load_release(repository)
    members = []
    for i, member in enumerate(serving.members):
        new_version = member.version + 1
        shutil.copytree(repository / member.name / str(member.version), repository / member.name / str(new_version),
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        if i == 0:
            (repository / member.name / str(new_version) / "model.onnx").write_bytes(
                b"not an onnx graph" * 64
            )
        members.append(member.model_copy(update={"version": new_version}))
    poison = serving.model_copy(
        update={"release_id": f"{serving.release_id}-poison", "members": tuple(members)}
    )
    write_release(poison, repository)
    return poison


@dataclass(frozen=True)
class PoisonRelease:
    serving: str
    published: str
    answers: list[tuple[float, int, str]]
    """(seconds since publishing, status, release or problem detail)."""
    rejections: float
    watch_s: float

    def verdict(self) -> Verdict:
        missed = [f"{status} at {at:+.1f} s: {what}" for at, status, what in self.answers if status != 200][
            :5
        ]
        others = {what for _, status, what in self.answers if status == 200} - {self.serving}
        if others:
            missed.append(f"answers from other releases: {sorted(others)}")
        if not any(at > self.watch_s - 5 for at, _, _ in self.answers):
            missed.append("no answers at the end of the watch")
        if self.rejections < 1:
            missed.append("pcam_release_rejected_total{reason=not_taken_up} did not count the refusal")
        return Verdict(missed)


def rejections(stack: LocalStack) -> float:
    text = httpx.get(f"{stack.config.url('ensemble')}/metrics", timeout=5).text
    return sum(float(value) for value in REJECTED.findall(text))


def run(stack: LocalStack, clients: int, bodies: UniqueBodies, watch_s: float = WATCH_S) -> PoisonRelease:
    """Load from `clients` threads; publish the poison release after a few seconds; watch `watch_s`."""
    repository = stack.config.model_repository
    serving = load_release(repository).release_id
    answers: list[tuple[float, int, str]] = []
    published_at = [float("inf")]
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=stack.config.url("gateway"), timeout=60) as http:
            while not stop.is_set():
                with lock:
                    (body,) = bodies.take(1)
                response = http.post("/v1/predict", files={"file": ("patch.png", body)})
                answer = response.json()
                what = answer.get("release") or answer.get("detail", "")
                answers.append((time.monotonic() - published_at[0], response.status_code, what))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        published_at[0] = time.monotonic()
        poison = publish_poison(repository)
        time.sleep(watch_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    return PoisonRelease(serving, poison.release_id, answers, rejections(stack), watch_s)


def report(result: PoisonRelease) -> Path:
    verdict = result.verdict()
    after = [a for a in result.answers if a[0] >= 0]
    rows = [
        ["serving release", result.serving],
        ["published (poison)", result.published],
        ["answers before publishing", len(result.answers) - len(after)],
        [f"answers in the {result.watch_s:g} s after", len(after)],
        ["of them not 200", sum(1 for a in result.answers if a[1] != 200)],
        ["ensemble's pcam_release_rejected_total{reason=not_taken_up}", result.rejections],
        ["verdict", verdict.summary()],
    ]
    return write("poison_release", "A poison release rolled out under load", ["figure", "value"], rows,
                 {"missed": verdict.missed}, OUTPUT_DIR)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = scenario_parser(__doc__)
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args(argv)
    work = ROOT / "build" / "chaos" / "poison-release"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(args.repository, work / "model_repository", ignore=shutil.ignore_patterns("__pycache__"))
    environment = {"PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0"}
    with local_stack(work / "model_repository", args.triton_venv, work / "stack", environment) as stack:
        result = run(stack, args.clients, UniqueBodies())
    report(result)
    return 0 if result.verdict().passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
