"""The budget's one conditional statement under concurrency, from two engines (two pools,
as two processes would have)."""

import asyncio

from sqlalchemy.ext.asyncio import create_async_engine

from memory_service.core.errors import BudgetExhausted
from memory_service.gateway.budget import CloudBudget


async def test_concurrent_reservations_never_overshoot(database_url: str) -> None:
    engines = [create_async_engine(database_url, pool_size=5) for _ in range(2)]
    budgets = [CloudBudget(engine, max_requests=7, max_tokens=1_000) for engine in engines]

    async def attempt(budget: CloudBudget) -> bool:
        try:
            await budget.reserve(50, 50)
        except BudgetExhausted:
            return False
        return True

    try:
        outcomes = await asyncio.gather(*(attempt(budgets[i % 2]) for i in range(20)))
        usage = await budgets[0].usage()
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(outcomes) == 7
    assert (usage["requests"], usage["tokens"]) == (7, 700)


async def test_the_last_grants_are_cut_to_what_is_left_and_never_pass_it(
    database_url: str,
) -> None:
    """Twenty concurrent requests of 100 prompt + 300 completion tokens against 1,000 a
    day: two get all they asked for, the third the 100 left (its max_tokens), the rest none."""
    engines = [create_async_engine(database_url, pool_size=5) for _ in range(2)]
    budgets = [CloudBudget(engine, max_requests=100, max_tokens=1_000) for engine in engines]

    async def attempt(budget: CloudBudget) -> int | None:
        try:
            return (await budget.reserve(100, 300)).completion
        except BudgetExhausted:
            return None

    try:
        grants = await asyncio.gather(*(attempt(budgets[i % 2]) for i in range(20)))
        usage = await budgets[0].usage()
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(g for g in grants if g is not None) == [100, 300, 300]
    assert (usage["requests"], usage["tokens"]) == (3, 1_000)


async def test_tokens_bind_before_requests(database_url: str) -> None:
    engine = create_async_engine(database_url)
    budget = CloudBudget(engine, max_requests=100, max_tokens=250)
    try:
        await budget.reserve(50, 50)
        await budget.reserve(50, 50)
        try:
            await budget.reserve(50, 50)  # 50 left: the prompt fits, no completion does
        except BudgetExhausted as exc:
            assert exc.details["tokens"] == 200
        else:
            raise AssertionError("a reservation past the token limit was granted")
        reservation = await budget.reserve(25, 25)
        await budget.refund(reservation)
        assert (await budget.usage())["tokens"] == 200
    finally:
        await engine.dispose()
