"""The background reconciler: embeds `pending` memories and purges expired ones.

It runs in `serve` (one task) and is safe to run in several processes against one database.
A batch is claimed in one short transaction (`repository.claim_pending`, migration 0012),
embedded with no transaction open, and written in a second one under the claim: no row lock
or connection is held while the embedder works, and rows a store is embedding inline are
never taken. When the embedder is unavailable, or the pass is cancelled (shutdown), the
batch is given back untouched for the next pass. A give-back that fails (the database is
down) is tried again at the start of each pass until it succeeds, so a database restart does
not leave rows waiting out their claim; a worker that dies leaves a claim that lapses after
`claim_seconds`. A text the embedder refuses is found by halving the batch
(`embed_each`), so the other rows are embedded all the same; the refusal counts as an
attempt on that row, and after `max_attempts` the row is `failed` with its last error. A
pass that met a refusal ends there: the next attempt waits for the next pass.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from uuid import UUID

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core.db import failure_text
from memory_service.embeddings.port import Embedder, VectorOrRefusal, embed_each
from memory_service.memories import repository
from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.lanes import bulk_lane

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 60.0


@dataclass
class ReconcileReport:
    embedded: int = 0
    failed_attempts: int = 0
    purged: int = 0
    embedder_down: bool = False


@dataclass(kw_only=True)
class Reconciler:
    engine: AsyncEngine
    embedder: Embedder
    space_id: int
    batch_size: int
    max_attempts: int
    # How long a claimed batch is this reconciler's: longer than any embedding call of one
    # batch takes, or another worker embeds the batch again (only one writes it).
    claim_seconds: float = 600.0
    # Claims whose give-back failed, in the order they failed.
    _unreleased: list[tuple[list[UUID], repository.Claim]] = field(default_factory=list, init=False)

    async def run_once(self) -> ReconcileReport:
        """Give back what an earlier pass could not, embed every pending row it can claim,
        then purge expired rows."""
        while self._unreleased:
            ids, claim = self._unreleased[0]
            async with self.engine.begin() as conn:
                await repository.release(conn, ids, claim)
            self._unreleased.pop(0)
        report = ReconcileReport()
        while True:
            claimed, refused = await self._embed_one_batch(report)
            if report.embedder_down or refused or claimed < self.batch_size:
                break
        async with self.engine.begin() as conn:
            report.purged = await repository.purge_expired(conn)
        return report

    async def _embed_one_batch(self, report: ReconcileReport) -> tuple[int, int]:
        """(rows claimed, rows refused) for one batch."""
        claim = repository.Claim(self.claim_seconds)
        async with self.engine.begin() as conn:
            batch = await repository.claim_pending(conn, self.space_id, claim, self.batch_size)
        if not batch:
            return 0, 0
        try:
            with bulk_lane():  # an in-process model keeps stores and queries off its thread
                results = await embed_each(self.embedder, [item.content for item in batch])
        except ProviderUnavailable as exc:
            log.info("reconciler: embedder unavailable, %d rows wait: %s", len(batch), exc)
            report.embedder_down = True
            await self._release(batch, claim)
            return len(batch), 0
        except BaseException:
            await asyncio.shield(self._release(batch, claim))
            raise
        try:
            refused = await self._write(batch, results, claim, report)
        except BaseException:  # cancelled, or the database failed: the batch goes back
            await asyncio.shield(self._release(batch, claim))
            raise
        report.failed_attempts += refused
        return len(batch), refused

    async def _write(
        self,
        batch: list[repository.PendingText],
        results: list[VectorOrRefusal],
        claim: repository.Claim,
        report: ReconcileReport,
    ) -> int:
        """Vectors and refusals of one batch, in one transaction; how many were refused."""
        done = [
            (item, result)
            for item, result in zip(batch, results, strict=True)
            if not isinstance(result, ProviderInputError)
        ]
        refused = 0
        async with self.engine.begin() as conn:
            if done:
                stored = await repository.store_vectors(
                    conn,
                    self.space_id,
                    [item for item, _ in done],
                    np.stack([vector for _, vector in done]),
                    claim,
                )
                report.embedded += len(stored)
            for item, result in zip(batch, results, strict=True):
                if isinstance(result, ProviderInputError):
                    await repository.record_failure(
                        conn, item.id, str(result), self.max_attempts, claim
                    )
                    refused += 1
        return refused

    async def _release(self, batch: list[repository.PendingText], claim: repository.Claim) -> None:
        """Give the batch back; when that fails, the next pass tries again."""
        ids = [item.id for item in batch]
        try:
            async with self.engine.begin() as conn:
                await repository.release(conn, ids, claim)
        except Exception as exc:
            self._unreleased.append((ids, claim))
            log.warning(
                "reconciler: %d claims not given back, next pass retries: %s",
                len(ids),
                failure_text(exc),
            )

    async def run_forever(self, interval_seconds: float) -> None:
        """Pass every `interval_seconds`; logs what it did at most once a minute."""
        totals = ReconcileReport()
        last_log = time.monotonic()
        while True:
            try:
                report = await self.run_once()
            except Exception as exc:
                log.error(
                    "reconciler pass failed; retrying in %.1fs: %s",
                    interval_seconds,
                    failure_text(exc),
                )
            else:
                totals.embedded += report.embedded
                totals.failed_attempts += report.failed_attempts
                totals.purged += report.purged
                if time.monotonic() - last_log >= LOG_EVERY_SECONDS:
                    log.info(
                        "reconciler: embedded %d, failed attempts %d, purged %d expired",
                        totals.embedded,
                        totals.failed_attempts,
                        totals.purged,
                    )
                    totals, last_log = ReconcileReport(), time.monotonic()
            await asyncio.sleep(interval_seconds)
