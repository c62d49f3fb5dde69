"""All SQL of the gateway: the cloud budget's daily usage row."""

from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.tables import cloud_usage

# The day is the database's, in UTC: every process sharing the database agrees on it.
_UTC_TODAY = func.timezone("UTC", func.now()).cast(cloud_usage.c.day.type)


async def reserve(
    conn: AsyncConnection, tokens: int, max_requests: int, max_tokens: int
) -> tuple[date, int, int] | None:
    """Count one request and `tokens` against today's row if both stay within the limits:
    (day, requests, tokens) after the reservation, or None when it would exceed them.

    One statement: `ON CONFLICT DO UPDATE` locks today's row and evaluates its WHERE on the
    latest committed version, so concurrent reservations from any number of processes
    serialize on the row and the limits can never be overshot. The first request of a day
    inserts the row; the caller has checked that one request of `tokens` fits at all.
    """
    insert = pg_insert(cloud_usage).values(day=_UTC_TODAY, requests=1, tokens=tokens)
    excluded = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=[cloud_usage.c.day],
        set_={
            "requests": cloud_usage.c.requests + 1,
            "tokens": cloud_usage.c.tokens + excluded.tokens,
            "updated_at": func.now(),
        },
        where=(cloud_usage.c.requests + 1 <= max_requests)
        & (cloud_usage.c.tokens + excluded.tokens <= max_tokens),
    ).returning(cloud_usage.c.day, cloud_usage.c.requests, cloud_usage.c.tokens)
    row = (await conn.execute(statement)).one_or_none()
    return None if row is None else (row.day, row.requests, row.tokens)


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
