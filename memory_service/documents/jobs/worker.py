"""The ingestion-job worker: claims a job, runs it through the documents pipeline, records
the outcome. Runs in `serve` (one task, `MEMORY_INGEST_WORKER`) and as
`memory-service worker`; any number of them may share one database (see `claim_job`).

A job runs on the same `Ingestor` as `memory-service ingest` (batch embedding, binary COPY,
one transaction per batch), so it is idempotent for free: a retried or reclaimed job finds
the documents an earlier attempt committed unchanged and goes on from there.

Failures, and which are retried:

- Per document, never retried: a file that cannot be read or decoded, one that is not a
  regular file (a FIFO, device or socket: never opened) or is over
  `MEMORY_INGEST_MAX_FILE_BYTES`, a jsonl line without text, a file a symlink leads to
  outside the allow-list, a text the embedder refuses (its 4xx). Each is recorded
  (`document_errors`, the first 100; `documents_failed` counts all) and the job goes on. A
  document that fails fails alone: the job ends `succeeded` with the failures listed, and
  `failed` only when every document failed.
- Per job, retried with exponential backoff: everything that stops a run as a whole: the
  embedder unavailable (no provider, connection refused, 5xx, timeouts), the database
  failing mid-run, an unexpected error. The job is queued again with `run_after = now() +
  base * 2**(attempts - 1)` (capped), and after `max_attempts` it is `dead`, keeping its
  last error. A worker that dies mid-job is the same case: its lease expires, the job is
  claimed again as a new attempt, and a job whose last attempt expired is `dead`.
- Per job, not retried: a server-side path that the allow-list no longer admits (`failed`).

Every RETENTION_EVERY_SECONDS a worker also empties the inline documents of jobs finished
more than `MEMORY_INGEST_RETENTION_DAYS` ago (the job records stay, with
`documents_dropped_at`).

While a job runs, the worker writes its progress every few seconds, which also renews the
lease. If that write finds the job no longer held (the lease expired and another worker
took it), the run is cancelled: the other worker owns the job now. Stopping (SIGTERM,
Ctrl-C, the end of `serve`) cancels the run: the open batch's transaction rolls back, the
job goes back to `queued`, runnable at once, and the interrupted attempt does not count.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import failure_text
from memory_service.core.settings import Settings
from memory_service.documents import loaders
from memory_service.documents.jobs import repository
from memory_service.documents.jobs.paths import outside, refuse_outside
from memory_service.documents.jobs.repository import ClaimedJob, JobCounts
from memory_service.documents.loaders import LoadedDocument, LoaderError
from memory_service.documents.pipeline import Ingestor, IngestReport
from memory_service.providers.errors import ProviderError

log = logging.getLogger(__name__)

MAX_RECORDED_ERRORS = 100
RETENTION_EVERY_SECONDS = 600.0
PROGRESS_EVERY_SECONDS = 2.0
LOG_EVERY_SECONDS = 30.0


class JobRefused(Exception):
    """The job cannot run as submitted and retrying would not change that."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempts: int) -> timedelta | None:
        """Wait before the next attempt after `attempts` failed ones; None: no more."""
        if attempts >= self.max_attempts:
            return None
        return timedelta(seconds=min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds))


@dataclass
class _Run:
    """One attempt in progress: its counts, kept current by the pipeline's callback."""

    job: ClaimedJob
    counts: JobCounts = field(default_factory=JobCounts)

    def update(self, report: IngestReport) -> None:
        self.counts.ingested, self.counts.unchanged = report.ingested, report.unchanged
        self.counts.failed, self.counts.chunks = len(report.failed), report.chunks
        self.counts.errors = [
            {"source_uri": source, "error": error}
            for source, error in report.failed[:MAX_RECORDED_ERRORS]
        ]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(kw_only=True)
class JobWorker:
    engine: AsyncEngine
    ingestor: Ingestor
    allowed_paths: Sequence[Path]
    max_file_bytes: int | None
    retry: RetryPolicy
    lease_seconds: float
    poll_seconds: float
    # How long a finished job keeps its inline documents; None: forever.
    retention: timedelta | None = None
    worker_id: str = field(default_factory=new_worker_id)
    finished: dict[str, int] = field(default_factory=dict)  # jobs this worker ended, by state
    _retained_at: float = field(default=-RETENTION_EVERY_SECONDS, repr=False)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    async def run(self, stop: asyncio.Event | None = None, *, until_idle: bool = False) -> bool:
        """Take jobs until `stop` is set (or, `until_idle`, until none is due); cancelling
        it releases the job in hand. Logs what it did at most every LOG_EVERY_SECONDS.

        False when a pass failed (the database unreachable, say): a long-running worker logs
        it and polls on; `until_idle` stops there, so its caller can exit non-zero."""
        stop = stop or asyncio.Event()
        log.info("ingest worker %s: started", self.worker_id)
        last_log = time.monotonic()
        clean = True
        while not stop.is_set():
            try:
                job = await self._unless_stopped(stop)
            except Exception as exc:
                log.error("ingest worker %s: pass failed: %s", self.worker_id, failure_text(exc))
                job, clean = None, False
            if time.monotonic() - last_log >= LOG_EVERY_SECONDS:
                log.info("ingest worker %s: jobs ended so far %s", self.worker_id, self.finished)
                last_log = time.monotonic()
            if job is None and not stop.is_set():
                if until_idle:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        log.info("ingest worker %s: stopped; jobs ended %s", self.worker_id, self.finished)
        return clean

    async def _unless_stopped(self, stop: asyncio.Event) -> ClaimedJob | None:
        work = asyncio.create_task(self.run_once())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        return None if work.cancelled() else work.result()

    async def run_once(self) -> ClaimedJob | None:
        """Claim one due job and run it to its outcome; None when no job is due.

        The claim runs shielded: a stop that lands while it commits must not leave a job
        claimed with nobody running it (it would wait for its lease, its attempt counted);
        such a job is handed back at once instead."""
        claim = asyncio.ensure_future(self._claim())
        try:
            job = await asyncio.shield(claim)
        except asyncio.CancelledError:
            claimed = await claim
            if claimed is not None:
                await self._write(lambda conn: repository.release_job(conn, claimed))
                log.info("ingest job %s: released (worker stopping)", claimed.id)
            raise
        if job is not None:
            log.info("ingest job %s: claimed (attempt %d)", job.id, job.attempts)
            await self._execute(_Run(job))
        return job

    async def _claim(self) -> ClaimedJob | None:
        if self.retention is not None and (
            time.monotonic() - self._retained_at >= RETENTION_EVERY_SECONDS
        ):
            # A transaction of its own: emptying many jobs' documents never holds up a claim.
            self._retained_at = time.monotonic()
            async with self.engine.begin() as conn:
                dropped = await repository.drop_finished_documents(conn, self.retention)
            if dropped:
                log.info("ingest jobs: inline documents of %d finished jobs dropped", dropped)
        async with self.engine.begin() as conn:
            for job_id in await repository.bury_expired(conn, self.retry.max_attempts):
                log.warning("ingest job %s: dead, its worker stopped answering", job_id)
            return await repository.claim_job(
                conn, self.worker_id, self.lease, self.retry.max_attempts
            )

    async def _execute(self, run: _Run) -> None:
        ingest = asyncio.create_task(self._ingest(run))
        beat = asyncio.create_task(self._heartbeat(run, ingest))
        try:
            run.update(await ingest)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                await asyncio.shield(
                    self._write(lambda conn: repository.release_job(conn, run.job))
                )
                log.info("ingest job %s: released (worker stopping)", run.job.id)
                raise
            log.warning("ingest job %s: lost its lease to another worker", run.job.id)
            return
        except JobRefused as exc:
            await self._end(run, "failed", str(exc))
            return
        except Exception as exc:
            await self._fail_attempt(run, exc)
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        counts = run.counts
        every_one = counts.failed > 0 and counts.ingested + counts.unchanged == 0
        await self._end(run, "failed" if every_one else "succeeded", _summary(counts.failed))

    async def _ingest(self, run: _Run) -> IngestReport:
        job = run.job
        items: Iterable[LoadedDocument | LoaderError]
        if job.path is None:
            async with self.engine.connect() as conn:
                stored = await repository.job_documents(conn, job)
            items = [LoadedDocument(**document) for document in stored]
            run.counts.total = len(items)
        else:
            path = Path(job.path)
            if outside(path, self.allowed_paths):
                raise JobRefused(f"{path} is no longer inside MEMORY_INGEST_ALLOWED_PATHS")
            refuse = refuse_outside(self.allowed_paths)
            run.counts.total = await asyncio.to_thread(_count, path, refuse, self.max_file_bytes)
            items = loaders.iter_documents([path], refuse, self.max_file_bytes)
        return await self.ingestor.ingest(
            items, job.namespace, run.update, raise_unavailable=True, actor=job.submitted_by
        )

    async def _heartbeat(self, run: _Run, ingest: "asyncio.Task[IngestReport]") -> None:
        """Write progress and renew the lease until cancelled; cancel `ingest` if the job
        was lost. A failing write is logged and tried again: the lease gives it time."""
        interval = min(PROGRESS_EVERY_SECONDS, self.lease_seconds / 3)
        last_log = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._write(
                    lambda conn: repository.record_progress(conn, run.job, run.counts, self.lease)
                )
            except Exception as exc:
                log.error("ingest job %s: progress not written: %s", run.job.id, failure_text(exc))
                continue
            if not held:
                ingest.cancel()
                return
            if time.monotonic() - last_log >= LOG_EVERY_SECONDS:
                _log_progress(run)
                last_log = time.monotonic()

    async def _fail_attempt(self, run: _Run, exc: Exception) -> None:
        if isinstance(exc, ProviderError):
            error = f"embedder unavailable: {exc}"
        else:
            # The job's row is readable by the API: it gets an id to find the details by in
            # this worker's log, never the exception's text (SQL, a document's values).
            error_id = uuid.uuid4().hex[:12]
            log.error(
                "ingest job %s: attempt %d failed (error %s): %s",
                run.job.id,
                run.job.attempts,
                error_id,
                failure_text(exc),
            )
            error = f"internal error {error_id} ({type(exc).__name__}); see the worker's log"
        delay = self.retry.delay(run.job.attempts)
        if await self._write(lambda conn: repository.retry_job(conn, run.job, error, delay)):
            if delay is None:
                self._count_end("dead")
                log.error(
                    "ingest job %s: dead after %d attempts: %s", run.job.id, run.job.attempts, error
                )
            else:
                log.warning("ingest job %s: retry in %s: %s", run.job.id, delay, error)

    async def _end(self, run: _Run, state: str, error: str | None) -> None:
        counts = run.counts
        if await self._write(
            lambda conn: repository.finish_job(conn, run.job, counts, state, error)
        ):
            self._count_end(state)
            _log_progress(run, state)
        else:
            log.warning("ingest job %s: taken over before it ended here", run.job.id)

    def _count_end(self, state: str) -> None:
        self.finished[state] = self.finished.get(state, 0) + 1

    async def _write(self, write: Callable[[AsyncConnection], Awaitable[bool]]) -> bool:
        """One guarded write about the job in hand, in its own transaction."""
        async with self.engine.begin() as conn:
            return await write(conn)


def job_worker(settings: Settings, engine: AsyncEngine, ingestor: Ingestor) -> JobWorker:
    """The worker `serve` and `memory-service worker` run, configured by `settings`."""
    return JobWorker(
        engine=engine,
        ingestor=ingestor,
        allowed_paths=settings.ingest_allowed_paths,
        max_file_bytes=settings.ingest_max_file_bytes,
        retry=RetryPolicy(
            settings.ingest_max_attempts,
            settings.ingest_retry_base_seconds,
            settings.ingest_retry_max_seconds,
        ),
        lease_seconds=settings.ingest_lease_seconds,
        poll_seconds=settings.ingest_poll_seconds,
        retention=None
        if settings.ingest_retention_days is None
        else timedelta(days=settings.ingest_retention_days),
    )


def _count(path: Path, refuse: Callable[[Path], str | None], max_file_bytes: int | None) -> int:
    """The documents (and failures) a walk of `path` yields: the job's total, known before
    the run starts. It reads the files once more, cheap beside chunking and embedding."""
    return sum(1 for _ in loaders.iter_documents([path], refuse, max_file_bytes))


def _summary(failed: int) -> str | None:
    return f"{failed} documents failed: see errors.documents" if failed else None


def _log_progress(run: _Run, state: str = "running") -> None:
    counts = run.counts
    done = counts.ingested + counts.unchanged + counts.failed
    log.info(
        "ingest job %s: %s, attempt %d: %d/%s documents (%d ingested, %d unchanged, "
        "%d failed), %d chunks",
        run.job.id,
        state,
        run.job.attempts,
        done,
        "?" if counts.total is None else counts.total,
        counts.ingested,
        counts.unchanged,
        counts.failed,
        counts.chunks,
    )
