"""Circuit breaker transitions, driven by a controllable clock."""

import pytest

from memory_service.providers.breaker import BreakerState, CircuitBreaker
from memory_service.providers.scoring import ProviderHealth, score


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh (the calls in between change it; mypy would narrow it)."""
    return breaker.state


class TestCircuitBreaker:
    def test_opens_after_the_threshold_of_consecutive_failures(self) -> None:
        breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=10, clock=Clock())
        breaker.record_failure()
        breaker.record_failure()
        assert state(breaker) is BreakerState.CLOSED and breaker.allow()
        breaker.record_failure()
        assert state(breaker) is BreakerState.OPEN
        assert not breaker.allow()

    def test_a_success_resets_the_count(self) -> None:
        breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=10, clock=Clock())
        breaker.record_failure()
        breaker.record_success()
        breaker.record_failure()
        assert state(breaker) is BreakerState.CLOSED

    def test_half_open_lets_one_trial_through_after_the_cooldown(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10, clock=clock)
        breaker.record_failure()
        clock.now += 9.9
        assert not breaker.allow()
        assert breaker.reopens_in() == pytest.approx(0.1)
        clock.now += 0.2
        assert breaker.allow(), "the first caller after the cooldown is the trial"
        assert state(breaker) is BreakerState.HALF_OPEN
        assert not breaker.allow(), "only one trial at a time"

    def test_a_successful_trial_closes(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, clock=clock)
        breaker.record_failure()
        clock.now += 5
        assert breaker.allow()
        breaker.record_success()
        assert state(breaker) is BreakerState.CLOSED
        assert breaker.allow() and breaker.allow()

    def test_a_failed_trial_reopens_for_a_full_cooldown(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=5, clock=clock)
        for _ in range(3):
            breaker.record_failure()
        clock.now += 5
        assert breaker.allow()
        breaker.record_failure()
        assert state(breaker) is BreakerState.OPEN
        assert breaker.reopens_in() == 5
        clock.now += 4
        assert not breaker.allow()


class TestScore:
    def test_priority_ranks_equally_healthy_providers(self) -> None:
        fast = ProviderHealth()
        fast.observe_success(20)
        assert score(fast, 10) > score(fast, 20) > score(fast, 100)

    def test_latency_and_errors_lower_the_score(self) -> None:
        quick, slow, flaky = ProviderHealth(), ProviderHealth(), ProviderHealth()
        quick.observe_success(20)
        slow.observe_success(800)
        flaky.observe_success(20)
        flaky.observe_failure("boom")
        assert score(quick, 10) > score(slow, 10)
        assert score(quick, 10) > score(flaky, 10)
        assert score(slow, 10) < score(quick, 20), "a slow primary loses to a quick fallback"

    def test_formula_as_documented(self) -> None:
        health = ProviderHealth()
        health.observe_success(100)
        health.observe_failure("x")
        expected = (1 - 0.3) / ((1 + 100 / 100) * (1 + 10 / 10))
        assert abs(score(health, 10) - expected) < 1e-12
        assert health.last_error == "x"
