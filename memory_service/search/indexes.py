"""The ANN index lifecycle of each vector table (memories, chunks) in an embedding space.

An ANN index answers only once it has been built on real rows: pgvectorscale's default
`diskann` layout trains its statistical binary quantizer on the rows present when the index
is built, so one created on an empty table and filled afterwards returns near-random results
(recall@10 0.003 at 10k rows, timescale/pgvectorscale #108). Hence, per table and space:

- `exact`: fewer than `min_rows` rows with vectors, no index. Vector search is an exact scan,
  correct by construction and fast at that size (`MEMORY_ANN_MIN_ROWS`; docs/benchmarks.md
  has the measurement that chose the default).
- `building`: the table crossed `min_rows`; `CREATE INDEX CONCURRENTLY` trains the index on
  the real rows. Reads and writes do not wait for it (it takes SHARE UPDATE EXCLUSIVE, which
  no INSERT, UPDATE or DELETE conflicts with), and searches keep scanning exactly: PostgreSQL
  never plans an index that is not yet valid.
- `ready`: the index serves searches.
- `rebuilding`: rows grew by `rebuild_growth` since the build, the recall sampler measured
  recall below target (`search/recall.py`), or an operator asked (`memory-service index
  rebuild`). A replacement is built concurrently under a new name, recorded, and then the old
  one is dropped concurrently; searches use the old index until the new one is valid.

No write waits for a build. pgvectorscale 0.9 locks every insert into a diskann index until
the inserting transaction ends, and the validation phase of a concurrent build inserts all
rows written during the build in one transaction: writes that reached the new index waited
for that whole phase (43 s at 100k rows). So while `CREATE INDEX CONCURRENTLY` builds a
diskann index, its builder holds a gate (an advisory lock), and every write of a vector row
leaves its row out of the table's indexes in the space (`in_index` false, migration 0009).
Those rows are the tail: searches sort it exactly beside the index (`search/repository.py`),
and the pass moves it into the index in short batches once the gate is open (`drain`). The
build itself then has nothing to insert at validation. HNSW builds need no gate.

One builder at a time per table and space, across every process on the database: a builder
holds a session advisory lock keyed by the `vector_index` row. The state is derived, not
stored: `building`/`rebuilding` means that lock is held now (`pg_locks`), so a builder that
crashed leaves no stale state, and its half-built index is dropped by the next pass
(`stray_indexes`). HNSW (pgvector) follows the same states where vectorscale is missing.
"""

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import failure_text
from memory_service.core.settings import Settings
from memory_service.core.tables import VECTOR_TABLES
from memory_service.search import index_repository as repo
from memory_service.search.index_repository import IndexRow

log = logging.getLogger(__name__)

# The builder's session settings, reset after the build:
# - no statement or lock timeout: a concurrent build waits for older transactions through
#   lock waits, and a large build runs for minutes;
# - no parallel maintenance workers: pgvectorscale 0.9 builds diskann in parallel from
#   `diskann.min_vectors_for_parallel_build` (65,536) rows, and a parallel build inside
#   CREATE INDEX CONCURRENTLY fails ("cannot assign transaction IDs during a parallel
#   operation"); pgvector's parallel HNSW build is given up with it, for one code path.
_BUILD_SETTINGS = (
    (text("SET statement_timeout = 0"), text("RESET statement_timeout")),
    (text("SET lock_timeout = 0"), text("RESET lock_timeout")),
    (
        text("SET max_parallel_maintenance_workers = 0"),
        text("RESET max_parallel_maintenance_workers"),
    ),
)

IndexState = Literal["exact", "building", "ready", "rebuilding"]
BuildOutcome = Literal["built", "rebuilt", "not_needed", "busy", "failed"]


@dataclass(frozen=True)
class IndexPolicy:
    """When to build and rebuild, and what (`MEMORY_ANN_MIN_ROWS`,
    `MEMORY_ANN_REBUILD_GROWTH`, `MEMORY_ANN_METHOD`)."""

    min_rows: int
    rebuild_growth: float
    method: str = "auto"

    @classmethod
    def of(cls, settings: Settings) -> "IndexPolicy":
        return cls(settings.ann_min_rows, settings.ann_rebuild_growth, settings.ann_method)


@dataclass(frozen=True)
class IndexStatus:
    """What `GET /v1/spaces` and `memory-service index status` show for one table."""

    table: str
    index_state: IndexState
    index_name: str | None
    method: str | None
    rows: int | None  # None when the caller skipped the count (a scan of the table)
    # Rows with a vector waiting outside the index: written while a build ran, moved in by
    # the pass that built it (what that pass leaves, by the next). Searches read them exactly.
    tail_rows: int
    rows_at_build: int | None
    built_at: datetime | None
    build_seconds: float | None
    rebuild_requested_at: datetime | None
    last_error: str | None
    recall: dict[str, Any]


def index_name(table_name: str, space_id: int, generation: int) -> str:
    return f"{table_name}_embedding_space_{space_id}_g{generation}_idx"


async def build_concurrently(
    conn: AsyncConnection, row_id: int, table: Table, name: str, space_id: int, method: str
) -> None:
    """CREATE INDEX CONCURRENTLY `name` on an AUTOCOMMIT connection, behind the gate of the
    `vector_index` row for diskann. Only diskann needs the gate: pgvector's HNSW has no
    index-wide insert lock, and its builds never made a write wait (docs/benchmarks.md)."""
    gated = method == "diskann"
    if gated:
        await repo.take_gate(conn, row_id)
    try:
        await repo.create_index_concurrently(conn, table, name, space_id, method)
    finally:
        if gated:
            await repo.release_gate(conn, row_id)


@dataclass(kw_only=True)
class IndexMaintainer:
    engine: AsyncEngine
    space_id: int
    policy: IndexPolicy

    def for_space(self, space_id: int) -> "IndexMaintainer":
        """The same lifecycle for another space of the database (status of every space)."""
        return IndexMaintainer(engine=self.engine, space_id=space_id, policy=self.policy)

    async def status(self, *, count_rows: bool = True) -> list[IndexStatus]:
        """Every vector table's index; `count_rows=False` skips the exact row count, the
        only part that scans the table (`/metrics` reads the rest at every scrape)."""
        async with self.engine.begin() as conn:
            await repo.ensure_rows(conn, self.space_id)
            rows = await repo.index_rows(conn, self.space_id)
            running = await repo.builds_running(conn, [row.id for row in rows])
            return [await self._status(conn, row, row.id in running, count_rows) for row in rows]

    async def _status(
        self, conn: AsyncConnection, row: IndexRow, running: bool, count_rows: bool
    ) -> IndexStatus:
        table = repo.vector_table(row.table_name)
        state: IndexState = "ready" if row.index_name else "exact"
        if running:
            state = "rebuilding" if row.index_name else "building"
        return IndexStatus(
            table=row.table_name,
            index_state=state,
            index_name=row.index_name,
            method=row.method,
            rows=await repo.count_rows(conn, table, self.space_id) if count_rows else None,
            tail_rows=await repo.count_tail(conn, table, self.space_id),
            rows_at_build=row.rows_at_build,
            built_at=row.built_at,
            build_seconds=row.build_seconds,
            rebuild_requested_at=row.rebuild_requested_at,
            last_error=row.last_error,
            recall=row.recall,
        )

    async def request_rebuild(self, table_name: str | None = None) -> int:
        """Ask for a rebuild at the next pass; the number of indexes marked."""
        async with self.engine.begin() as conn:
            return await repo.request_rebuild(conn, self.space_id, table_name)

    async def maintain(self) -> dict[str, BuildOutcome]:
        """One pass over every vector table: build or rebuild where the policy says so."""
        return {table.name: await self.maintain_table(table.name) for table in VECTOR_TABLES}

    async def maintain_table(self, table_name: str) -> BuildOutcome:
        async with self._builder(table_name) as held:
            if held is None:
                return "busy"
            conn, row = held
            table = repo.vector_table(table_name)
            for stray in await repo.stray_indexes(conn, table, self.space_id, row.index_name):
                log.info("index: dropping %s, left by an interrupted build", stray)
                await repo.drop_index_concurrently(conn, table, stray)
            if not await self._due(conn, row):
                outcome: BuildOutcome = "not_needed"
            else:
                try:
                    await self._build(conn, row)
                except Exception as exc:
                    log.error(
                        "index: building the %s index of space %d failed: %s",
                        table_name,
                        self.space_id,
                        failure_text(exc),
                    )
                    async with self.engine.begin() as bookkeeping:
                        await repo.record_error(bookkeeping, row.id, f"{type(exc).__name__}: {exc}")
                    outcome = "failed"
                else:
                    outcome = "rebuilt" if row.index_name else "built"
        try:
            await self.drain(table_name)
        except Exception as exc:
            # The build's outcome stands; the next pass drains what is left.
            log.error(
                "index: draining the %s tail of space %d failed: %s",
                table_name,
                self.space_id,
                failure_text(exc),
            )
        return outcome

    async def drain(self, table_name: str) -> int:
        """Move the table's tail (rows written while a build ran) into its index, in short
        transactions; the rows moved. Stops early when a build closes the gate again, and
        after as many batches as the tail held at the start, so that steady writes during
        a build elsewhere cannot keep it going: the next pass goes on."""
        table = repo.vector_table(table_name)
        async with self.engine.connect() as conn:
            tail = await repo.count_tail(conn, table, self.space_id)
        moved = 0
        for _ in range(math.ceil(tail / repo.DRAIN_BATCH)):
            async with self.engine.begin() as conn:
                batch = await repo.drain_tail(conn, table, self.space_id)
            if batch == 0:
                break
            moved += batch
        if moved:
            log.info(
                "index: %d %s rows of space %d moved from the tail into the index",
                moved,
                table_name,
                self.space_id,
            )
        return moved

    async def _due(self, conn: AsyncConnection, row: IndexRow) -> bool:
        table = repo.vector_table(row.table_name)
        if row.index_name is None:
            return await repo.has_rows(conn, table, self.space_id, self.policy.min_rows)
        if row.rebuild_requested_at is not None:
            return True
        if row.method != await repo.resolve_method(conn, self.policy.method):
            return True  # MEMORY_ANN_METHOD changed since the build
        grown = math.ceil(self.policy.rebuild_growth * (row.rows_at_build or 0))
        return await repo.has_rows(conn, table, self.space_id, max(grown, self.policy.min_rows))

    async def _build(self, conn: AsyncConnection, row: IndexRow) -> None:
        table = repo.vector_table(row.table_name)
        method = await repo.resolve_method(conn, self.policy.method)
        name = index_name(row.table_name, self.space_id, row.generation + 1)
        rows = await repo.count_rows(conn, table, self.space_id)
        log.info("index: building %s (%s) on %d rows", name, method, rows)
        started = time.monotonic()
        await build_concurrently(conn, row.id, table, name, self.space_id, method)
        seconds = time.monotonic() - started
        await repo.analyze(conn, table)
        async with self.engine.begin() as bookkeeping:
            await repo.record_build(bookkeeping, row.id, name, method, rows, seconds)
        log.info("index: %s ready after %.1fs", name, seconds)
        if row.index_name is not None:
            await repo.drop_index_concurrently(conn, table, row.index_name)

    @asynccontextmanager
    async def _builder(
        self, table_name: str
    ) -> AsyncIterator[tuple[AsyncConnection, IndexRow] | None]:
        """An AUTOCOMMIT connection holding this table's builder lock, with its row; None when
        another session builds. The service's statement and lock timeouts do not apply to a
        build."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await repo.ensure_rows(conn, self.space_id)
            row = await self._row(conn, table_name)
            if not await repo.try_build_lock(conn, row.id):
                yield None
                return
            for setting, _ in _BUILD_SETTINGS:
                await conn.execute(setting)
            try:
                # Read again under the lock: another builder may have finished meanwhile.
                yield conn, await self._row(conn, table_name)
            finally:
                for _, reset in _BUILD_SETTINGS:
                    await conn.execute(reset)
                await repo.release_build_lock(conn, row.id)

    async def _row(self, conn: AsyncConnection, table_name: str) -> IndexRow:
        row = await repo.index_row(conn, self.space_id, table_name)
        if row is None:
            raise RuntimeError(f"no vector_index row for {table_name} after ensure_rows")
        return row

    async def run_forever(self, interval_seconds: float) -> None:
        """A pass every `interval_seconds`, logged when it builds; errors are logged, not fatal."""
        while True:
            try:
                outcomes = await self.maintain()
            except Exception as exc:
                log.error(
                    "index pass failed; retrying in %.0fs: %s", interval_seconds, failure_text(exc)
                )
            else:
                for table_name, outcome in outcomes.items():
                    if outcome in ("built", "rebuilt"):
                        log.info(
                            "index: %s index of space %d %s", table_name, self.space_id, outcome
                        )
            await asyncio.sleep(interval_seconds)
