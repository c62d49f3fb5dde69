"""Recall measured continuously: live vector searches re-run as exact scans, off the request
path.

A search that used a vector list offers it here (`offer`): with probability `rate` the query
vector, its scope, `k` and the ids it returned are queued, unless the bounded queue is full
(then the sample is dropped: sampling never slows a search down). A background task
(`run_forever`) takes at most `max_per_minute` samples a minute and, for each, runs the very
statement the search ran in its exact form (`repository.vector_memories(..., exact=True)`:
an ORDER BY no ANN index can serve, over the same filters). That is the exact answer over
the same scope, so recall@k is the share of its ids the search returned. Lists that were
exact already (a table still without an index, or a scope small enough to scan) are not
sampled: they are exact by construction.

Recall is kept per table and selectivity class: the share of the space's rows the scope
could return, bucketed as `100%` (at least 50%), `10%` (5% to 50%), `1%` (0.5% to 5%) and
`0.1%` (less). The mean of each class's last `WINDOW` samples is written to the table's
`vector_index.recall`, shown by `GET /v1/spaces` and `memory-service index status`.

Policy below target: once a class holds `MIN_SAMPLES` samples and its mean is below
`target`, a warning is logged and a rebuild of that table's index is requested (the index
lifecycle builds it at its next pass), at most once per `REBUILD_COOLDOWN_SECONDS` per
table and never again while a requested rebuild is pending. A rebuilt index starts a fresh
window. Raising the query settings is left to the operator (`MEMORY_DISKANN_RESCORE`,
`MEMORY_DISKANN_SEARCH_LIST_SIZE`), guided by the curve in docs/benchmarks.md: a setting
changed behind the operator's back would move every search's latency.
"""

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import failure_text
from memory_service.providers.embedding import Vectors
from memory_service.search import index_repository, repository
from memory_service.search.repository import Scope, VectorTable

log = logging.getLogger(__name__)

WINDOW = 50
MIN_SAMPLES = 20
REBUILD_COOLDOWN_SECONDS = 3_600.0
QUEUE_SIZE = 64


@dataclass(frozen=True)
class Sample:
    table: VectorTable
    scope: Scope
    query_vector: Vectors
    k: int
    found: tuple[str, ...]


def selectivity_class(scope_rows: int, space_rows: int) -> str:
    share = scope_rows / space_rows if space_rows else 1.0
    if share >= 0.5:
        return "100%"
    if share >= 0.05:
        return "10%"
    if share >= 0.005:
        return "1%"
    return "0.1%"


def recall_at_k(found: Sequence[str], exact: Sequence[str], k: int) -> float:
    """The share of the exact top k that the search returned (1.0 when nothing is there)."""
    wanted = set(exact[:k])
    return len(wanted & set(found[:k])) / len(wanted) if wanted else 1.0


@dataclass(kw_only=True)
class RecallSampler:
    engine: AsyncEngine
    space_id: int
    rate: float
    max_per_minute: int
    target: float
    queue: asyncio.Queue[Sample] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    windows: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    built_at: dict[str, datetime | None] = field(default_factory=dict)
    last_request: dict[str, float] = field(default_factory=dict)

    def offer(
        self,
        table: VectorTable,
        scope: Scope,
        query_vector: Vectors,
        k: int,
        found: Sequence[str],
    ) -> None:
        """Queue a search for measurement with probability `rate`; never blocks."""
        if self.rate <= 0 or random.random() >= self.rate:
            return
        sample = Sample(table, scope, query_vector, k, tuple(found[:k]))
        if self.queue.full():
            return
        self.queue.put_nowait(sample)

    async def run_forever(self) -> None:
        """Measure queued samples, at most `max_per_minute` a minute; errors are logged."""
        interval = 60.0 / self.max_per_minute
        while True:
            sample = await self.queue.get()
            started = time.monotonic()
            try:
                await self.measure(sample)
            except Exception as exc:
                log.error("recall sample of %s failed: %s", sample.table, failure_text(exc))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def measure(self, sample: Sample) -> float | None:
        """Recall@k of one sample, recorded; None when the table has no index to measure."""
        async with self.engine.begin() as conn:
            row = await index_repository.index_row(conn, self.space_id, sample.table)
            if row is None or row.index_name is None:
                return None
            exact = [ranked.id for ranked in await self._exact(conn, sample)]
            table = index_repository.vector_table(sample.table)
            space_rows = await index_repository.count_rows(conn, table, self.space_id)
            scope_rows = await repository.count_scope(conn, sample.table, sample.scope)
        value = recall_at_k(sample.found, exact, sample.k)
        await self._record(sample.table, selectivity_class(scope_rows, space_rows), value, row)
        return value

    async def _exact(self, conn: AsyncConnection, sample: Sample) -> list[repository.RankedRow]:
        statement: Select[Any] = (
            repository.vector_memories(sample.scope, sample.query_vector, sample.k, exact=True)
            if sample.table == "memory"
            else repository.vector_chunks(sample.scope, sample.query_vector, sample.k, exact=True)
        )
        return await repository.search(conn, statement)

    async def _record(
        self, table: str, selectivity: str, value: float, row: index_repository.IndexRow
    ) -> None:
        if self.built_at.get(table) != row.built_at:
            # A new index: the old one's measurements say nothing about it.
            self.windows = {key: w for key, w in self.windows.items() if key[0] != table}
            self.built_at[table] = row.built_at
        window = self.windows.setdefault((table, selectivity), deque(maxlen=WINDOW))
        window.append(value)
        mean = sum(window) / len(window)
        summary = {
            "recall": round(mean, 4),
            "samples": len(window),
            "measured_at": datetime.now(UTC).isoformat(),
        }
        async with self.engine.begin() as conn:
            await index_repository.record_recall(conn, self.space_id, table, selectivity, summary)
        if len(window) >= MIN_SAMPLES and mean < self.target:
            await self._below_target(table, selectivity, mean, row)

    async def _below_target(
        self, table: str, selectivity: str, mean: float, row: index_repository.IndexRow
    ) -> None:
        log.warning(
            "recall@k of %s searches (%s selectivity) is %.3f over the last %d samples, "
            "below the target %.2f",
            table,
            selectivity,
            mean,
            len(self.windows[(table, selectivity)]),
            self.target,
        )
        last = self.last_request.get(table)
        if row.rebuild_requested_at is not None or (
            last is not None and time.monotonic() - last < REBUILD_COOLDOWN_SECONDS
        ):
            return
        self.last_request[table] = time.monotonic()
        async with self.engine.begin() as conn:
            await index_repository.request_rebuild(conn, self.space_id, table)
        log.warning("recall below target: a rebuild of the %s index is requested", table)
