"""All SQL of the gateway: the cloud budget's daily usage row."""

from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.tables import cloud_usage

# The day is the database's, in UTC: every process sharing the database agrees on it.
_UTC_TODAY = func.timezone("UTC", func.now()).cast(cloud_usage.c.day.type)


async def reserve(
    conn: AsyncConnection,
    prompt: int,
    completion: int,
    min_completion: int,
    max_requests: int,
    max_tokens: int,
) -> tuple[date, int] | None:
    """Count one request of `prompt` tokens and up to `completion` more against today's row:
    (day, the completion tokens granted), or None when not even `min_completion` fit.

    The grant is what is left of the day's tokens after the prompt, at most `completion`:
    the caller sends it as the request's `max_tokens`, so the provider cannot spend past
    the limit. Today's row is locked for the decision (`FOR UPDATE`), so concurrent
    reservations from any number of processes serialize on it and never overshoot.
    """
    await conn.execute(
        pg_insert(cloud_usage)
        .values(day=_UTC_TODAY, requests=0, tokens=0)
        .on_conflict_do_nothing(index_elements=[cloud_usage.c.day])
    )
    row = (
        await conn.execute(
            select(cloud_usage.c.day, cloud_usage.c.requests, cloud_usage.c.tokens)
            .where(cloud_usage.c.day == _UTC_TODAY)
            .with_for_update()
        )
    ).one()
    granted = min(completion, max_tokens - row.tokens - prompt)
    if row.requests + 1 > max_requests or granted < min_completion:
        return None
    await conn.execute(
        update(cloud_usage)
        .where(cloud_usage.c.day == row.day)
        .values(
            requests=cloud_usage.c.requests + 1,
            tokens=cloud_usage.c.tokens + prompt + granted,
            updated_at=func.now(),
        )
    )
    return row.day, granted


async def adjust(conn: AsyncConnection, day: date, requests: int, tokens: int) -> None:
    """Add `requests` and `tokens` (negative to give back) to `day`'s row, floored at 0."""
    await conn.execute(
        update(cloud_usage)
        .where(cloud_usage.c.day == day)
        .values(
            requests=func.greatest(cloud_usage.c.requests + requests, 0),
            tokens=func.greatest(cloud_usage.c.tokens + tokens, 0),
            updated_at=func.now(),
        )
    )


async def today(conn: AsyncConnection) -> tuple[date, int, int]:
    """Today's (day, requests, tokens); zeros when nothing was spent yet."""
    day = (await conn.execute(select(_UTC_TODAY))).scalar_one()
    row = (
        await conn.execute(
            select(cloud_usage.c.requests, cloud_usage.c.tokens).where(cloud_usage.c.day == day)
        )
    ).one_or_none()
    return (day, row.requests, row.tokens) if row else (day, 0, 0)
