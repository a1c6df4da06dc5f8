"""Resilience on the real stack, `make chaos`'s scenarios (resilience/) run for seconds instead of
minutes and judged on what the answers are, not on their timing (that is `make chaos`'s verdict):

- open-loop load at three times the capacity measured in the same run: the excess refused at once with
  503 and Retry-After, nothing else failing;
- a slow Redis, behind a TCP proxy adding latency: every answer still a 200, Redis never holding more
  connections from the gateway than its bound;
- one member 20x slower inside Triton: answers or refusals with Retry-After, never a 500, 502 or hang,
  and once the load drains the gateway and ensemble hold no more connections than they started with;
- a poison release (a corrupt model file) published under load: refused and counted, the previous
  release answering every request;
- a random process of the supervised stack killed every few seconds under Locust: every process back
  and the gateway ready at the end, no answer slower than the request deadline.
"""

import shutil

import pytest

from benchmarks.serving import UniqueBodies
from resilience import chaos, poison_release, slow_member
from resilience.overload import MAX_PENDING_PATCHES, measure, stack_environment
from resilience.slow_redis import REDIS_MAX_CONNECTIONS, run_phases, stack_behind_proxy
from tests.integration.conftest import TRITON_VENV, own_stack

# Load runs, like `make bench`'s: two and a half minutes of `make test` on 2 cores, so `make test-slow`
# runs them (CI runs both).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_load_past_capacity_is_refused_with_retry_after_and_never_fails(model_repository, tmp_path) -> None:
    environment = {**stack_environment(), "PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0"}
    with own_stack(model_repository, tmp_path, environment) as stack:
        pids = {name: process.popen.pid for name, process in stack.processes.items()}
        result = measure(stack.config.url("gateway"), pids, 8.0, 3.0, UniqueBodies(), MAX_PENDING_PATCHES)
    assert result.refusal_faults() == []  # 200, or 503/429 with Retry-After: nothing else
    assert result.refused.sum() > 0, "three times capacity was never refused: admission did not engage"
    assert result.accepted.sum() > 0


def test_a_slow_redis_slows_answers_without_failing_them_or_piling_up_connections(
    model_repository, tmp_path
) -> None:
    delay_file = tmp_path / "delay-ms"
    delay_file.write_text("0")
    with stack_behind_proxy(model_repository, TRITON_VENV, tmp_path, delay_file) as stack:
        phases = run_phases(stack, delay_file, 40, UniqueBodies())  # any answer but a 200 raises
    assert [p.delay_ms for p in phases] == [0, 200, 1000]
    assert all(p.redis_clients <= REDIS_MAX_CONNECTIONS for p in phases)
    assert all(len(p.load.seconds) == 40 for p in phases)


def test_a_member_made_20x_slower_in_triton_is_answered_or_refused_and_nothing_piles_up(
    model_repository, tmp_path
) -> None:
    repository = tmp_path / "model_repository"
    slow_member.slowed_member(model_repository, repository)
    with own_stack(repository, tmp_path / "stack", slow_member.environment()) as stack:
        result = slow_member.measure(stack, rate=6.0, duration_s=10.0, bodies=UniqueBodies())
    assert result.faults() == []  # 200, or 503/504 with Retry-After
    assert (result.run.status == 200).any()
    for name, (before, after) in result.fds.items():
        assert after <= before + slow_member.KEPT_ALIVE, f"{name}: {before} -> {after} open files"


def test_a_poison_release_under_load_is_refused_and_counted_while_the_previous_one_serves_everyone(
    model_repository, tmp_path
) -> None:
    repository = tmp_path / "model_repository"
    shutil.copytree(model_repository, repository)
    environment = {"PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "PCAM_ENSEMBLE_RELEASE_READY_TIMEOUT_S": "4"}
    with own_stack(repository, tmp_path / "stack", environment) as stack:
        result = poison_release.run(stack, clients=2, bodies=UniqueBodies(), watch_s=12.0)
    assert result.verdict().missed == []  # every answer a 200 of the serving release; the refusal counted


def test_processes_killed_at_random_under_locust_all_come_back_and_no_request_outlives_its_deadline(
    model_repository, tmp_path
) -> None:
    environment = {"PCAM_GATEWAY_REQUEST_TIMEOUT_S": str(chaos.REQUEST_TIMEOUT_S)}
    with own_stack(model_repository, tmp_path / "stack", environment) as stack:
        result = chaos.run(stack, duration_s=24.0, every_s=8.0, seed=1, out=tmp_path / "locust")
    assert len(result.kills) == 3 and result.requests > 0
    assert result.verdict().missed == []  # every process back and ready; nothing past its deadline
