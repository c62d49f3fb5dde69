"""A circuit breaker per provider.

    closed ──(failure_threshold consecutive failures)──> open
    open ──(cooldown elapsed; the next caller is let through as the single trial)──> half_open
    half_open ──(trial succeeds)──> closed
    half_open ──(trial fails)──> open, cooldown restarts

While open, a provider costs a request nothing: `allow()` answers False without a call.
The clock is injected so tests drive time.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_seconds: float = 15.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    _trial_taken: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """May a call go to the provider now? In half-open, only the first caller may."""
        if self.state is BreakerState.OPEN:
            if self.opened_at is not None and self.clock() - self.opened_at < self.cooldown_seconds:
                return False
            self.state, self._trial_taken = BreakerState.HALF_OPEN, False
        if self.state is BreakerState.HALF_OPEN:
            if self._trial_taken:
                return False
            self._trial_taken = True
        return True

    def record_success(self) -> None:
        self.state, self.consecutive_failures, self.opened_at = BreakerState.CLOSED, 0, None

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if (
            self.state is BreakerState.HALF_OPEN
            or self.consecutive_failures >= self.failure_threshold
        ):
            self.state, self.opened_at = BreakerState.OPEN, self.clock()

    def release_trial(self) -> None:
        """A half-open trial ended without a verdict (cancelled): let the next caller try."""
        if self.state is BreakerState.HALF_OPEN:
            self._trial_taken = False

    def reopens_in(self) -> float | None:
        """Seconds until an open breaker lets a trial through; None unless open."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return None
        return max(0.0, self.cooldown_seconds - (self.clock() - self.opened_at))
