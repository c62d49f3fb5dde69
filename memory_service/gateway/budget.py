"""The daily cloud budget: requests and tokens sent to cloud chat providers per UTC day.

Kept in PostgreSQL (`cloud_usage`), so it holds across restarts and across every process
that shares the database. A cloud call first reserves one request, its prompt (estimated,
four characters a token) and its completion: what it asked for (or the default), capped to
what is left of the day, and at least `MIN_COMPLETION_TOKENS` (or all it asked for, if
less). The grant is sent as the request's `max_tokens`, so the provider cannot generate past
the day's limit: a hard cap, whatever the concurrency. A refusal is a 429
`budget_exhausted` before anything is sent.

After the call the reservation is settled with the provider's reported
`usage.total_tokens` (cloud streams are asked for their usage, see gateway.service), or
given back in full when the provider refused or failed before answering (it has not spent
our quota). A stream that breaks after it began, and a call abandoned by its client or cut
by an unexpected error, keep the reservation: tokens may have been spent. Only a prompt
longer than its estimate can take the day past its limit when settled; the next
reservation is then refused.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core.errors import BudgetExhausted
from memory_service.gateway import repository

# A completion cut shorter than this is not worth a cloud call: refused instead.
MIN_COMPLETION_TOKENS = 64


@dataclass(frozen=True)
class Reservation:
    day: date
    tokens: int  # prompt and completion, as reserved
    completion: int  # the completion tokens granted: the request's max_tokens


class CloudBudget:
    def __init__(self, engine: AsyncEngine, max_requests: int, max_tokens: int) -> None:
        self._engine = engine
        self.max_requests = max_requests
        self.max_tokens = max_tokens

    async def reserve(self, prompt: int, completion: int) -> Reservation:
        """Reserve one request of `prompt` tokens and up to `completion` more; BudgetExhausted
        when today's budget cannot give it at least MIN_COMPLETION_TOKENS of completion."""
        least = min(completion, MIN_COMPLETION_TOKENS)
        if self.max_requests == 0 or prompt + least > self.max_tokens:
            raise BudgetExhausted(
                f"a cloud request of ~{prompt} prompt tokens can never fit the daily budget "
                f"({self.max_requests} requests, {self.max_tokens} tokens)",
                await self.usage(),
            )
        async with self._engine.begin() as conn:
            reserved = await repository.reserve(
                conn, prompt, completion, least, self.max_requests, self.max_tokens
            )
        if reserved is None:
            raise BudgetExhausted(
                "the daily cloud budget is spent; it resets at 00:00 UTC", await self.usage()
            )
        day, granted = reserved
        return Reservation(day, prompt + granted, granted)

    async def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Replace the estimate by what the provider reported (None: keep the estimate)."""
        if used_tokens is None or used_tokens == reservation.tokens:
            return
        async with self._engine.begin() as conn:
            await repository.adjust(conn, reservation.day, 0, used_tokens - reservation.tokens)

    async def refund(self, reservation: Reservation) -> None:
        """The call failed: give back its request and its tokens."""
        async with self._engine.begin() as conn:
            await repository.adjust(conn, reservation.day, -1, -reservation.tokens)

    async def usage(self) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            day, requests, tokens = await repository.today(conn)
        return {
            "day": day.isoformat(),
            "requests": requests,
            "tokens": tokens,
            "max_requests": self.max_requests,
            "max_tokens": self.max_tokens,
        }
