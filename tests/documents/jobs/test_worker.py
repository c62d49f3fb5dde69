"""Workers on a real queue: exclusive claims, retries to dead-letter, leases."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_service.bootstrap import Resources
from memory_service.core.db import create_engine
from memory_service.core.settings import Settings
from memory_service.documents.jobs import repository
from memory_service.documents.jobs.repository import JobCounts
from memory_service.documents.jobs.worker import job_worker
from tests.documents.jobs.conftest import (
    MAX_ATTEMPTS,
    RETRY_BASE_SECONDS,
    MakeWorker,
    count,
    execute,
    job_row,
    notes,
)
from tests.fakes import FlakyProvider

LEASE = timedelta(seconds=60)


async def queue(engine: AsyncEngine, jobs: int, documents: int = 1) -> list[UUID]:
    ids = []
    async with engine.begin() as conn:
        for n in range(jobs):
            row = await repository.insert_job(
                conn, "kb", documents=notes(documents, prefix=f"job{n}")
            )
            ids.append(row.id)
    return ids


@pytest.fixture
async def second_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """Another process's connections to the same database."""
    assert settings.database_url is not None
    engine = create_engine(settings.database_url, pool_size=20)
    yield engine
    await engine.dispose()


class TestClaims:
    async def test_a_locked_job_is_skipped_not_waited_for(
        self, resources: Resources, second_engine: AsyncEngine
    ) -> None:
        first_id, second_id = await queue(resources.engine, 2)
        async with resources.engine.begin() as one, second_engine.begin() as two:
            mine = await repository.claim_job(one, "a", LEASE, MAX_ATTEMPTS)
            theirs = await repository.claim_job(two, "b", LEASE, MAX_ATTEMPTS)
            assert mine is not None and theirs is not None
            assert {mine.id, theirs.id} == {first_id, second_id}
            async with second_engine.begin() as three:
                assert await repository.claim_job(three, "c", LEASE, MAX_ATTEMPTS) is None

    async def test_many_concurrent_claims_take_each_job_once(
        self, resources: Resources, second_engine: AsyncEngine
    ) -> None:
        ids = await queue(resources.engine, 10)

        async def claim(n: int) -> UUID | None:
            async with second_engine.begin() as conn:
                job = await repository.claim_job(conn, f"w{n}", LEASE, MAX_ATTEMPTS)
                await asyncio.sleep(0)  # let the others claim while this one holds its lock
            return None if job is None else job.id

        claimed = await asyncio.gather(*(claim(n) for n in range(16)))
        taken = [job_id for job_id in claimed if job_id is not None]
        assert sorted(taken) == sorted(ids), "every job taken, none twice"

    async def test_two_workers_run_every_job_exactly_once(
        self, resources: Resources, settings: Settings, second_engine: AsyncEngine
    ) -> None:
        assert resources.documents is not None
        ids = await queue(resources.engine, 8)
        one = job_worker(settings, resources.engine, resources.documents)
        two = job_worker(settings, second_engine, resources.documents)
        await asyncio.gather(one.run(until_idle=True), two.run(until_idle=True))
        rows = [await job_row(resources.engine, job_id) for job_id in ids]
        assert {row["state"] for row in rows} == {"succeeded"}
        assert {row["attempts"] for row in rows} == {1}, "no job was claimed twice"
        assert {row["claimed_by"] for row in rows} <= {one.worker_id, two.worker_id}
        assert sum(one.finished.values()) + sum(two.finished.values()) == len(ids)
        assert await count(resources.engine, "document") == len(ids)


class TestRetries:
    async def test_an_embedder_outage_backs_off_then_dead_letters(
        self, resources: Resources, make_worker: MakeWorker, embedder: FlakyProvider
    ) -> None:
        (job_id,) = await queue(resources.engine, 1)
        embedder.down = True
        worker = make_worker("w1")
        for attempt in range(1, MAX_ATTEMPTS):
            assert await worker.run_once() is not None
            row = await job_row(resources.engine, job_id)
            assert (row["state"], row["attempts"], row["claimed_by"]) == ("queued", attempt, None)
            assert row["delay"] == timedelta(seconds=RETRY_BASE_SECONDS * 2 ** (attempt - 1))
            assert "switched off by the test" in row["last_error"]
            assert await worker.run_once() is None, "not due before its backoff has passed"
            await execute(resources.engine, "UPDATE ingest_job SET run_after = now()")

        assert await worker.run_once() is not None
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["attempts"]) == ("dead", MAX_ATTEMPTS)
        assert "embedder unavailable" in row["last_error"] and row["finished_at"] is not None
        assert await worker.run_once() is None, "a dead job is never taken again"
        assert await count(resources.engine, "chunk") == 0
        assert worker.finished == {"dead": 1}

    async def test_a_retry_after_the_outage_succeeds(
        self, resources: Resources, make_worker: MakeWorker, embedder: FlakyProvider
    ) -> None:
        (job_id,) = await queue(resources.engine, 1, documents=3)
        embedder.down = True
        await make_worker("w1").run_once()
        embedder.down = False
        await execute(resources.engine, "UPDATE ingest_job SET run_after = now()")
        await make_worker("w1").run_once()
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["attempts"], row["documents_ingested"]) == ("succeeded", 2, 3)
        assert "switched off" in row["last_error"], "the last failure stays visible"


class TestLeases:
    async def test_an_expired_lease_is_reclaimed_and_the_old_worker_locked_out(
        self, resources: Resources, make_worker: MakeWorker
    ) -> None:
        (job_id,) = await queue(resources.engine, 1)
        async with resources.engine.begin() as conn:
            crashed = await repository.claim_job(conn, "crashed", LEASE, MAX_ATTEMPTS)
        assert crashed is not None
        assert await make_worker("w2").run_once() is None, "its lease is still live"

        await execute(
            resources.engine, "UPDATE ingest_job SET lease_expires_at = now() - interval '1 s'"
        )
        assert await make_worker("w2").run_once() is not None
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["attempts"], row["claimed_by"]) == ("succeeded", 2, "w2")
        async with resources.engine.begin() as conn:
            late = await repository.finish_job(conn, crashed, JobCounts(), "failed", "late")
        assert late is False
        assert (await job_row(resources.engine, job_id))["state"] == "succeeded"

    async def test_a_lease_expired_on_the_last_attempt_is_dead(
        self, resources: Resources, make_worker: MakeWorker
    ) -> None:
        (job_id,) = await queue(resources.engine, 1)
        await execute(
            resources.engine,
            "UPDATE ingest_job SET state = 'running', claimed_by = 'crashed', attempts = :n, "
            "lease_expires_at = now() - interval '1 s'",
            n=MAX_ATTEMPTS,
        )
        assert await make_worker("w2").run_once() is None
        row = await job_row(resources.engine, job_id)
        assert row["state"] == "dead" and "lease of crashed expired" in row["last_error"]

    async def test_a_worker_that_lost_its_job_stops_and_leaves_it_alone(
        self, resources: Resources, make_worker: MakeWorker, embedder: FlakyProvider
    ) -> None:
        (job_id,) = await queue(resources.engine, 1, documents=5)
        embedder.hold = asyncio.Event()
        running = asyncio.create_task(make_worker("w1").run_once())
        await asyncio.wait_for(embedder.waiting.wait(), 60)
        await execute(resources.engine, "UPDATE ingest_job SET claimed_by = 'w2'")
        assert await asyncio.wait_for(running, 60) is not None, "the next heartbeat noticed"
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["claimed_by"], row["attempts"]) == ("running", "w2", 1)
        assert await count(resources.engine, "chunk") == 0

    async def test_a_stopped_worker_gives_its_job_back(
        self, resources: Resources, make_worker: MakeWorker, embedder: FlakyProvider
    ) -> None:
        (job_id,) = await queue(resources.engine, 1, documents=5)
        embedder.hold = asyncio.Event()
        stop = asyncio.Event()
        running = asyncio.create_task(make_worker("w1").run(stop))
        await asyncio.wait_for(embedder.waiting.wait(), 60)
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["claimed_by"]) == ("running", "w1")
        stop.set()
        await asyncio.wait_for(running, 60)
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["attempts"], row["claimed_by"]) == ("queued", 0, None)
        assert row["lease_expires_at"] is None


class TestUntilIdle:
    async def test_a_pass_that_cannot_reach_the_database_is_not_idle(
        self, settings: Settings, resources: Resources
    ) -> None:
        """`worker --until-idle` must not report a clean, empty queue when it never saw it."""
        assert resources.documents is not None
        unreachable = create_async_engine(
            "postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
        )
        try:
            worker = job_worker(settings, unreachable, resources.documents)
            assert await worker.run(until_idle=True) is False
        finally:
            await unreachable.dispose()
        healthy = job_worker(settings, resources.engine, resources.documents)
        assert await healthy.run(until_idle=True) is True


class TestStopDuringClaim:
    async def test_a_stop_at_claim_time_leaves_the_job_runnable_and_uncounted(
        self, resources: Resources, make_worker: MakeWorker
    ) -> None:
        """Whether the stop lands before the claim commits (rolled back) or while it commits
        (claimed, then handed back by run_once), the job is queued with no attempt spent.
        Which of the two happens here depends on timing; the outcome must not."""
        (job_id,) = await queue(resources.engine, 1)
        task = asyncio.create_task(make_worker("w1").run_once())
        await asyncio.sleep(0)  # the claim's transaction is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        row = await job_row(resources.engine, job_id)
        assert (row["state"], row["claimed_by"], row["attempts"]) == ("queued", None, 0)
        assert await make_worker("w2").run_once() is not None, "runnable at once"


class TestErrorHygiene:
    async def test_an_unexpected_failure_leaves_an_error_id_not_the_sql_or_its_values(
        self,
        resources: Resources,
        make_worker: MakeWorker,
        allowed: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A NUL byte cannot be stored in PostgreSQL text: the write fails with a database
        error whose message would carry the statement and, without `hide_parameters`, the
        document's text. The job row (readable over the API) gets an error id; the log gets
        the details, without the values."""
        secret = "patient ssn 123-45-6789"
        (allowed / "nul.txt").write_text(f"{secret}\x00 and the rest of the note.")
        async with resources.engine.begin() as conn:
            row = await repository.insert_job(conn, "kb", path=str(allowed / "nul.txt"))
        with caplog.at_level(logging.INFO):
            assert await make_worker("w1").run_once() is not None
        job = await job_row(resources.engine, row.id)
        error = job["last_error"]
        assert error.startswith("internal error ") and "see the worker's log" in error
        error_id = error.split()[2]
        assert f"(error {error_id})" in caplog.text
        for leaked in (secret, "123-45-6789", "INSERT", "COPY", "SELECT"):
            assert leaked not in error
        assert "123-45-6789" not in caplog.text


class TestRetention:
    async def test_finished_jobs_lose_their_inline_documents_after_the_retention(
        self, resources: Resources, make_worker: MakeWorker, settings: Settings
    ) -> None:
        old, recent = await queue(resources.engine, 2)
        await make_worker("w1").run(until_idle=True)
        assert settings.ingest_retention_days is not None
        age = timedelta(days=settings.ingest_retention_days, hours=1)
        await execute(
            resources.engine,
            "UPDATE ingest_job SET finished_at = now() - CAST(:age AS interval) WHERE id = :id",
            age=age,
            id=old,
        )
        await make_worker("w2").run(until_idle=True)  # its first poll runs the retention pass

        dropped, kept = (
            await job_row(resources.engine, old),
            await job_row(resources.engine, recent),
        )
        assert dropped["documents"] == [] and dropped["documents_dropped_at"] is not None
        assert (dropped["state"], dropped["documents_ingested"]) == ("succeeded", 1)
        assert kept["documents"] == notes(1, prefix="job1") and kept["documents_dropped_at"] is None
