"""What discovery knows of a provider's health, and the score that ranks providers.

    score = (1 - error_rate) / ((1 + latency_ms / 100) * (1 + priority / 10))

- `error_rate` is an EWMA (alpha 0.3) of failures over probes and live calls, 0..1.
- `latency_ms` is an EWMA (alpha 0.3) of successful call latency; 0 before any success.
- `priority` is the operator's preference, lower first (vLLM 10, Ollama 20, local 100).

Priority dominates between healthy providers of similar speed (10 vs 20 halves nothing but
divides by 2 vs 3); latency moves a provider down as it slows (100 ms costs a factor 2), and
errors scale the score toward 0. Only eligible providers are ranked at all: open breakers,
failed parity and undeclared spaces are excluded before scoring, never merely scored low.
"""

from dataclasses import dataclass

from memory_service.providers.breaker import CircuitBreaker

FORMULA = "score = (1 - error_rate) / ((1 + latency_ms / 100) * (1 + priority / 10))"
ALPHA = 0.3
LATENCY_SCALE_MS = 100.0
PRIORITY_SCALE = 10.0


@dataclass
class ProviderHealth:
    latency_ms: float | None = None
    error_rate: float = 0.0
    successes: int = 0
    last_error: str | None = None

    def observe_success(self, latency_ms: float | None) -> None:
        """`latency_ms` None: a success whose duration says nothing about the provider's
        speed (a chat completion's length is the client's choice), so only the error rate
        moves."""
        if latency_ms is not None:
            self.latency_ms = (
                latency_ms
                if self.latency_ms is None
                else ALPHA * latency_ms + (1 - ALPHA) * self.latency_ms
            )
        self.error_rate = (1 - ALPHA) * self.error_rate
        self.successes += 1

    def observe_failure(self, error: str) -> None:
        """Consecutive failures are counted once, by the provider's circuit breaker."""
        self.error_rate = ALPHA + (1 - ALPHA) * self.error_rate
        self.last_error = error


def score(health: ProviderHealth, priority: int) -> float:
    latency = health.latency_ms or 0.0
    return (1 - health.error_rate) / (
        (1 + latency / LATENCY_SCALE_MS) * (1 + priority / PRIORITY_SCALE)
    )


def record_outcome(
    health: ProviderHealth, breaker: CircuitBreaker, latency_ms: float | None, error: str | None
) -> None:
    """One call's outcome (probe or live) into health and breaker: no error is a success
    (with its latency, or None when its duration does not measure the provider)."""
    if error is None:
        health.observe_success(latency_ms)
        breaker.record_success()
    else:
        health.observe_failure(error or "unknown error")
        breaker.record_failure()
