"""Per-key rate limits: requests per minute and embedded tokens per minute.

Each key has two token buckets, refilled continuously at their per-minute rate and holding
at most one minute's worth. A request is let through while its bucket holds at least one
unit and then takes what it costs, so the bucket may go into debt: one large document is
never refused for its size alone, and the key then waits until the debt is paid back. A
refused request gets 429 `rate_limited` with `Retry-After`, the seconds until its bucket
holds one unit again.

Tokens are estimated as characters / 4, rounded up, for every text the request asks the
service to embed (contents, queries, documents, `/v1/embeddings` input, the recall query of
a chat): counting them with the model's tokenizer would tokenize every text twice.

The counters live in this process: N replicas of the service allow N times the limits.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from memory_service.core.errors import MemoryServiceError


class RateLimited(MemoryServiceError):
    status_code = 429
    error_type = "rate_limited"

    def __init__(self, message: str, details: Any, retry_after: float) -> None:
        super().__init__(message, details)
        self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


def estimated_tokens(texts: Sequence[str]) -> int:
    return sum(math.ceil(len(text) / 4) for text in texts)


@dataclass
class _Bucket:
    level: float
    at: float


@dataclass
class Limiter:
    """One per-minute limit for every key; 0 turns it off."""

    per_minute: int
    name: str
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[UUID, _Bucket] = field(default_factory=dict)

    def take(self, key: UUID, amount: int) -> None:
        """Take `amount` from `key`'s bucket, or raise RateLimited while it holds less than
        one unit (a request, a token)."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        rate = self.per_minute / 60
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        bucket.level = min(float(self.per_minute), bucket.level + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.level < 1:
            wait = (1 - bucket.level) / rate  # until the bucket holds one unit again
            raise RateLimited(
                f"this key is over its {self.name} limit ({self.per_minute} per minute); "
                f"retry in {math.ceil(wait)} s",
                {"limit": self.name, "per_minute": self.per_minute},
                wait,
            )
        bucket.level -= amount


@dataclass
class RateLimits:
    requests: Limiter
    tokens: Limiter

    @classmethod
    def per_minute(cls, requests: int, tokens: int) -> "RateLimits":
        return cls(Limiter(requests, "requests_per_minute"), Limiter(tokens, "tokens_per_minute"))
