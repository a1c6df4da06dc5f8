from services.gateway.breaker import CircuitBreaker
from tests.unit.gateway.fakes import Clock


def test_opens_after_k_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("dep-a", failure_threshold=3, reset_after_s=10, clock=Clock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # not consecutive: the count starts again
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow() and not breaker.is_open
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()


def test_half_open_lets_one_trial_through_then_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep-b", failure_threshold=1, reset_after_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # others keep skipping while it runs
    breaker.record_failure()  # trial failed: open for another 10 s
    clock.now += 5
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_a_trial_that_never_reports_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep-c", failure_threshold=1, reset_after_s=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()  # its caller is cancelled and never records the outcome
    clock.now += 10
    assert breaker.allow()
