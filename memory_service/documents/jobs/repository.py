"""All SQL of the ingestion-job queue. Functions take a connection; callers own the
transaction.

A job is held by a claim token, `(claimed_by, attempts)`: the worker's id and the attempt
it started. Every write a worker makes about a running job (progress, finish, retry,
release) is guarded by that token and `state = 'running'`, so a worker whose lease expired
and whose job another worker took since can no longer touch it: its write matches no row
and it learns it lost the job.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Row, and_, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.access import EVERY_NAMESPACE, NOBODY, Actor, Namespaces
from memory_service.core.tables import ingest_job

# Every column but the inline documents, which only the worker that runs the job reads.
VIEW_COLUMNS = [column for column in ingest_job.c if column.name != "documents"]


@dataclass(frozen=True)
class ClaimedJob:
    id: UUID
    namespace: str
    path: str | None
    attempts: int
    claimed_by: str
    # The key that submitted the job: the documents it writes are that key's (audit).
    submitted_by: Actor = NOBODY


@dataclass
class JobCounts:
    """A running job's progress, as a worker writes it."""

    total: int | None = None
    ingested: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        return {
            "documents_total": self.total,
            "documents_ingested": self.ingested,
            "documents_unchanged": self.unchanged,
            "documents_failed": self.failed,
            "chunks": self.chunks,
            "document_errors": self.errors,
        }


async def insert_job(
    conn: AsyncConnection,
    namespace: str,
    *,
    path: str | None = None,
    documents: list[dict[str, Any]] | None = None,
    actor: Actor = NOBODY,
) -> Row[Any]:
    """Queue a job, runnable now, submitted by `actor`; returns its view row."""
    # A job has a path or documents; the other stays SQL NULL (JSONB would store `null`).
    source: dict[str, Any] = (
        {"path": path}
        if documents is None
        else {"documents": documents, "documents_total": len(documents)}
    )
    statement = (
        ingest_job.insert()
        .values(namespace=namespace, **source, **actor.columns("created"))
        .returning(*VIEW_COLUMNS)
    )
    return (await conn.execute(statement)).one()


async def get_job(
    conn: AsyncConnection, job_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE
) -> Row[Any] | None:
    statement = select(*VIEW_COLUMNS).where(
        ingest_job.c.id == job_id, namespaces.clause(ingest_job.c.namespace)
    )
    return (await conn.execute(statement)).first()


async def list_jobs(
    conn: AsyncConnection,
    namespace: str | None,
    state: str | None,
    limit: int,
    after: tuple[datetime, UUID] | None,
    namespaces: Namespaces = EVERY_NAMESPACE,
) -> list[Row[Any]]:
    """Newest first, keyset-paginated on (created_at, id), of `namespaces` only."""
    statement = select(*VIEW_COLUMNS).where(namespaces.clause(ingest_job.c.namespace))
    if namespace is not None:
        statement = statement.where(ingest_job.c.namespace == namespace)
    if state is not None:
        statement = statement.where(ingest_job.c.state == state)
    if after is not None:
        statement = statement.where(
            tuple_(ingest_job.c.created_at, ingest_job.c.id) < tuple_(*after)
        )
    statement = statement.order_by(ingest_job.c.created_at.desc(), ingest_job.c.id.desc())
    return list((await conn.execute(statement.limit(limit))).all())


def _fresh_counts() -> dict[str, Any]:
    """The counts an attempt starts from; an inline job's total is known and kept."""
    counts = JobCounts().values()
    del counts["documents_total"]
    return counts


def _lease_expired() -> ColumnElement[bool]:
    return and_(ingest_job.c.state == "running", ingest_job.c.lease_expires_at < func.now())


async def bury_expired(conn: AsyncConnection, max_attempts: int) -> list[UUID]:
    """Dead-letter the jobs whose worker stopped answering on their last allowed attempt
    (a job that kills its worker every time must not be retried forever)."""
    statement = (
        update(ingest_job)
        .where(_lease_expired(), ingest_job.c.attempts >= max_attempts)
        .values(
            state="dead",
            finished_at=func.now(),
            updated_at=func.now(),
            lease_expires_at=None,
            last_error=func.concat(
                "the lease of ",
                ingest_job.c.claimed_by,
                " expired on attempt ",
                ingest_job.c.attempts,
                ": the worker stopped answering",
            ),
        )
        .returning(ingest_job.c.id)
    )
    return list((await conn.execute(statement)).scalars())


async def claim_job(
    conn: AsyncConnection, worker: str, lease: timedelta, max_attempts: int
) -> ClaimedJob | None:
    """Take the job that has waited longest, or None when no job is due.

    The work query (in the style of pgai's vectorizer worker):

        UPDATE ingest_job SET state = 'running', claimed_by = :worker, attempts + 1, ...
        WHERE id = (
            SELECT id FROM ingest_job
            WHERE state IN ('queued', 'running') AND run_after <= now()
              AND (state = 'queued'
                   OR (lease_expires_at < now() AND attempts < :max_attempts))
            ORDER BY run_after, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
        RETURNING ...

    A job is due when it is queued and its backoff (`run_after`) has passed, or when it is
    running but its lease expired: its worker crashed or hangs, and the job is taken again
    as a new attempt. `SKIP LOCKED` lets any number of workers poll at once: each locks a
    different row instead of queueing behind the first; and should two read the same row
    as due, the second re-checks it after the first commits (READ COMMITTED re-evaluates
    the WHERE on the updated row) and finds it running with a live lease. The claim is its
    own short transaction; from then on the lease, not a row lock, holds the job, so a
    long job never keeps a transaction open, and the worker renews the lease as it goes.
    `ingest_job_work_idx` (partial, on `run_after`, for queued and running jobs only)
    serves the inner query whatever the number of finished jobs. Progress counts restart
    with each attempt; `started_at` keeps the first.
    """
    due = (
        select(ingest_job.c.id)
        .where(
            ingest_job.c.state.in_(["queued", "running"]),
            ingest_job.c.run_after <= func.now(),
            or_(
                ingest_job.c.state == "queued",
                and_(_lease_expired(), ingest_job.c.attempts < max_attempts),
            ),
        )
        .order_by(ingest_job.c.run_after, ingest_job.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(ingest_job)
        .where(ingest_job.c.id == due)
        .values(
            state="running",
            claimed_by=worker,
            attempts=ingest_job.c.attempts + 1,
            lease_expires_at=func.now() + lease,
            started_at=func.coalesce(ingest_job.c.started_at, func.now()),
            updated_at=func.now(),
            finished_at=None,
            **_fresh_counts(),
        )
        .returning(
            ingest_job.c.id,
            ingest_job.c.namespace,
            ingest_job.c.path,
            ingest_job.c.attempts,
            ingest_job.c.claimed_by,
            ingest_job.c.created_by_key_id,
            ingest_job.c.created_by_key_name,
        )
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        return None
    return ClaimedJob(
        id=row.id,
        namespace=row.namespace,
        path=row.path,
        attempts=row.attempts,
        claimed_by=row.claimed_by,
        submitted_by=Actor(row.created_by_key_id, row.created_by_key_name),
    )


async def job_documents(conn: AsyncConnection, job: ClaimedJob) -> list[dict[str, Any]]:
    """The inline documents of a job (empty for a path job)."""
    statement = select(ingest_job.c.documents).where(ingest_job.c.id == job.id)
    documents: list[dict[str, Any]] | None = (await conn.execute(statement)).scalar_one()
    return documents or []


def _held(job: ClaimedJob) -> ColumnElement[bool]:
    return and_(
        ingest_job.c.id == job.id,
        ingest_job.c.claimed_by == job.claimed_by,
        ingest_job.c.attempts == job.attempts,
        ingest_job.c.state == "running",
    )


async def _update_held(conn: AsyncConnection, job: ClaimedJob, values: dict[str, Any]) -> bool:
    """Apply `values` to a job this worker still holds; False when it lost it."""
    statement = (
        update(ingest_job)
        .where(_held(job))
        .values(updated_at=func.now(), **values)
        .returning(literal(True))
    )
    return (await conn.execute(statement)).first() is not None


async def record_progress(
    conn: AsyncConnection, job: ClaimedJob, counts: JobCounts, lease: timedelta
) -> bool:
    """Write progress and renew the lease (the heartbeat); False when the job was lost."""
    return await _update_held(
        conn, job, {**counts.values(), "lease_expires_at": func.now() + lease}
    )


async def finish_job(
    conn: AsyncConnection, job: ClaimedJob, counts: JobCounts, state: str, error: str | None
) -> bool:
    """End a job as `succeeded` or `failed` (not retried) with its final counts."""
    values = {**counts.values(), "state": state, "finished_at": func.now()}
    if error is not None:
        values["last_error"] = error
    return await _update_held(conn, job, {**values, "lease_expires_at": None})


async def retry_job(
    conn: AsyncConnection, job: ClaimedJob, error: str, delay: timedelta | None
) -> bool:
    """After a failed attempt: queue it again to run after `delay`, or, with no delay
    (attempts exhausted), move it to `dead` keeping its last error."""
    values: dict[str, Any] = {"last_error": error, "lease_expires_at": None}
    if delay is None:
        values |= {"state": "dead", "finished_at": func.now()}
    else:
        values |= {"state": "queued", "claimed_by": None, "run_after": func.now() + delay}
    return await _update_held(conn, job, values)


async def release_job(conn: AsyncConnection, job: ClaimedJob) -> bool:
    """Give a job back, runnable now, when its worker stops: the attempt does not count
    (never below zero), so the attempts a job has are the runs that failed or died."""
    return await _update_held(
        conn,
        job,
        {
            "state": "queued",
            "claimed_by": None,
            "lease_expires_at": None,
            "attempts": func.greatest(ingest_job.c.attempts - 1, 0),
            "run_after": func.now(),
        },
    )


async def queue_figures(conn: AsyncConnection) -> tuple[dict[str, int], float | None]:
    """Jobs by state, and the age in seconds of the oldest job due to run (None: none)."""
    by_state = await conn.execute(
        select(ingest_job.c.state, func.count()).group_by(ingest_job.c.state)
    )
    oldest = await conn.scalar(
        select(func.extract("epoch", func.now() - func.min(ingest_job.c.run_after))).where(
            ingest_job.c.state == "queued", ingest_job.c.run_after <= func.now()
        )
    )
    return {state: count for state, count in by_state}, None if oldest is None else float(oldest)


async def drop_finished_documents(conn: AsyncConnection, older_than: timedelta) -> int:
    """Empty the inline documents of jobs finished longer than `older_than` ago (their text
    is in the documents table now, or failed); the jobs' records stay. How many."""
    statement = (
        update(ingest_job)
        .where(
            ingest_job.c.state.in_(("succeeded", "failed", "dead")),
            ingest_job.c.finished_at < func.now() - older_than,
            ingest_job.c.documents_dropped_at.is_(None),
            ingest_job.c.path.is_(None),
        )
        .values(documents=literal([], JSONB), documents_dropped_at=func.now())
    )
    return (await conn.execute(statement)).rowcount
