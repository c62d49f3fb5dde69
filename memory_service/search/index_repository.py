"""All SQL of the ANN index lifecycle (`search/indexes.py`). Functions take a connection.

DDL is built with SQLAlchemy's `CreateIndex`/`DropIndex` (identifiers quoted by the
compiler), never with f-strings. `CREATE INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY`
cannot run inside a transaction block: their callers pass an AUTOCOMMIT connection.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Table, and_, bindparam, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, DropIndex

from memory_service.core.errors import StartupError
from memory_service.core.tables import VECTOR_TABLES, vector_index
from memory_service.search.repository import IndexMethod, in_index

# The first key of every builder's advisory lock; the second is the `vector_index` row's id.
# A constant of this service's own, so `pg_locks` tells a running build from a finished one.
BUILD_LOCK_CLASS = 7_340_001
# The first key of the gate a builder holds while `CREATE INDEX CONCURRENTLY` runs: while it
# is held, writes leave their rows out of the table's ANN indexes in the space (`in_index`
# false; migration 0009's `vector_index_accepting` reads this class, literally).
GATE_LOCK_CLASS = 7_340_002
# Tail rows moved into the index per transaction. Each batch holds pgvectorscale's insert
# lock (and its rows' locks) for as long as its inserts into the graph take, and a store
# that reaches the index meanwhile waits for it (the lock queues in order, so for one batch
# at most). At 20k rows a batch of 200 made stores wait up to 0.9 s, one of 20 about 0.1 s
# (docs/benchmarks.md).
DRAIN_BATCH = 5


@dataclass(frozen=True)
class IndexRow:
    """One `vector_index` row: the ANN index of one vector table in one space."""

    id: int
    table_name: str
    space_id: int
    index_name: str | None
    method: str | None
    generation: int
    rows_at_build: int | None
    built_at: datetime | None
    build_seconds: float | None
    rebuild_requested_at: datetime | None
    last_error: str | None
    recall: dict[str, Any]


def vector_table(name: str) -> Table:
    for table in VECTOR_TABLES:
        if table.name == name:
            return table
    raise KeyError(name)


async def ensure_rows(conn: AsyncConnection, space_id: int) -> None:
    """One `vector_index` row per vector table of the space (idempotent)."""
    await conn.execute(
        pg_insert(vector_index)
        .values([{"table_name": table.name, "space_id": space_id} for table in VECTOR_TABLES])
        .on_conflict_do_nothing(constraint="vector_index_table_name_space_id_key")
    )


async def index_rows(conn: AsyncConnection, space_id: int) -> list[IndexRow]:
    result = await conn.execute(
        select(vector_index).where(vector_index.c.space_id == space_id).order_by(vector_index.c.id)
    )
    return [IndexRow(**row._mapping) for row in result]


async def index_row(conn: AsyncConnection, space_id: int, table_name: str) -> IndexRow | None:
    """The row, or None before the lifecycle first looked at this space (`ensure_rows`)."""
    result = await conn.execute(
        select(vector_index).where(
            vector_index.c.space_id == space_id, vector_index.c.table_name == table_name
        )
    )
    row = result.first()
    return None if row is None else IndexRow(**row._mapping)


def _vector_rows(table: Table, space_id: int) -> Any:
    """The rows of `table` with a vector in the space (in its index or in its tail)."""
    return select(literal(1)).where(table.c.space_id == space_id, table.c.embedding.is_not(None))


async def count_rows(conn: AsyncConnection, table: Table, space_id: int) -> int:
    """Exact: a scan of the table (an operator's question, and once per build)."""
    statement = select(func.count()).select_from(_vector_rows(table, space_id).subquery())
    return int((await conn.execute(statement)).scalar_one())


async def has_rows(conn: AsyncConnection, table: Table, space_id: int, at_least: int) -> bool:
    """Whether the space holds `at_least` rows with vectors in `table`. The scan stops at that
    many, so asking costs the threshold, not the table's size."""
    capped = _vector_rows(table, space_id).limit(at_least).subquery()
    found = (await conn.execute(select(func.count()).select_from(capped))).scalar_one()
    return int(found) >= at_least


# Literal statements: no SQL is assembled from names, even our own.
# A chunk's scope (namespace, metadata, time) lives on its document: search plans its
# chunk lists from both tables' statistics.
_ANALYZE = {"memory": text("ANALYZE memory"), "chunk": text("ANALYZE chunk, document")}


async def analyze(conn: AsyncConnection, table: Table) -> None:
    """Fresh planner statistics: after a bulk load the planner may still believe the table
    empty and sort it whole instead of using the new index, and misjudge a scope's size
    (`search/searcher.py` plans exact or index from that estimate)."""
    await conn.execute(_ANALYZE[table.name])


async def count_tail(conn: AsyncConnection, table: Table, space_id: int) -> int:
    """Rows with a vector waiting outside the index (written during a build): a scan of the
    tail's partial index, which is small unless a build is running or the drain fell
    behind."""
    statement = select(func.count()).where(
        table.c.space_id == space_id, ~table.c.in_index, table.c.embedding.is_not(None)
    )
    return int((await conn.execute(statement)).scalar_one())


async def drain_tail(conn: AsyncConnection, table: Table, space_id: int) -> int:
    """Move up to DRAIN_BATCH tail rows of the space into its index (`in_index` true, which
    inserts them into it), unless a build holds the gate; the rows moved. Rows a writer
    holds are skipped, not waited for."""
    batch = (
        select(table.c.id)
        .where(table.c.space_id == space_id, ~table.c.in_index, table.c.embedding.is_not(None))
        .limit(DRAIN_BATCH)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(table)
        .where(
            table.c.id.in_(batch.scalar_subquery()),
            func.vector_index_accepting(literal(table.name), space_id),
        )
        .values(in_index=True)
    )
    return (await conn.execute(statement)).rowcount


async def take_gate(conn: AsyncConnection, row_id: int) -> None:
    """Close the gate of this row's table and space: from now on writes keep their rows out
    of its indexes. A writing statement that read the gate open already holds its lock on
    the table, so the concurrent build the caller starts next waits for it and indexes its
    rows; nothing written later reaches the index being built."""
    await conn.execute(select(func.pg_advisory_lock(GATE_LOCK_CLASS, row_id)))


async def release_gate(conn: AsyncConnection, row_id: int) -> None:
    await conn.execute(select(func.pg_advisory_unlock(GATE_LOCK_CLASS, row_id)))


async def try_build_lock(conn: AsyncConnection, row_id: int) -> bool:
    """Take the builder's session lock for this row, or False when another session has it."""
    statement = select(func.pg_try_advisory_lock(BUILD_LOCK_CLASS, row_id))
    return bool((await conn.execute(statement)).scalar_one())


async def release_build_lock(conn: AsyncConnection, row_id: int) -> None:
    await conn.execute(select(func.pg_advisory_unlock(BUILD_LOCK_CLASS, row_id)))


async def builds_running(conn: AsyncConnection, row_ids: list[int]) -> set[int]:
    """The rows whose builder lock some session of this database holds now (pg_locks lists
    every database's locks, and the keys repeat across databases)."""
    result = await conn.execute(
        text(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = CAST(:lock_class AS oid) AND objsubid = 2 "
            "AND objid::bigint = ANY(:ids) "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"lock_class": BUILD_LOCK_CLASS, "ids": row_ids},
    )
    return {int(row_id) for row_id in result.scalars()}


async def has_vectorscale(conn: AsyncConnection) -> bool:
    found = await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vectorscale'"))
    return found.first() is not None


async def resolve_method(conn: AsyncConnection, configured: str) -> IndexMethod:
    """The index method `MEMORY_ANN_METHOD` names on this database: `auto` is diskann where
    vectorscale is installed, else hnsw. Raises StartupError for diskann without it."""
    vectorscale = await has_vectorscale(conn)
    if configured == "auto":
        return "diskann" if vectorscale else "hnsw"
    if configured == "diskann" and not vectorscale:
        raise StartupError(
            "MEMORY_ANN_METHOD=diskann, but the vectorscale extension is not installed in "
            "this database; install pgvectorscale or set MEMORY_ANN_METHOD=hnsw"
        )
    return "diskann" if configured == "diskann" else "hnsw"


def _index(table: Table, name: str, space_id: int, method: str) -> Index:
    """The index of the space's rows with a vector and `in_index` (`repository.in_index`).
    Rows without a vector are left out by the predicate, not by the index: pgvectorscale
    takes its insert lock before it looks at the vector, and PostgreSQL never calls an
    index's insert for a row outside its predicate."""
    index = Index(
        name,
        table.c.embedding,
        postgresql_using=method,
        postgresql_ops={"embedding": "vector_cosine_ops"},
        postgresql_where=and_(table.c.space_id == space_id, *in_index(table)),
        postgresql_concurrently=True,
    )
    # Building the Index attached it to the shared table metadata; it is data, not schema
    # (and would otherwise leak into every later use of `metadata`).
    table.indexes.discard(index)
    return index


async def create_index_concurrently(
    conn: AsyncConnection, table: Table, name: str, space_id: int, method: str
) -> None:
    """Build `name` over the space's rows without blocking reads or writes (AUTOCOMMIT)."""
    await conn.execute(CreateIndex(_index(table, name, space_id, method)))


async def drop_index_concurrently(conn: AsyncConnection, table: Table, name: str) -> None:
    await conn.execute(DropIndex(_index(table, name, 0, "btree"), if_exists=True))


async def stray_indexes(
    conn: AsyncConnection, table: Table, space_id: int, keep: str | None
) -> list[str]:
    """Indexes of this lifecycle on `table` for the space, other than `keep`: what a crashed
    or interrupted build left behind (invalid, or valid but never switched to)."""
    result = await conn.execute(
        text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = :table AND indexname LIKE :pattern "
            "AND indexname IS DISTINCT FROM :keep"
        ),
        {
            "table": table.name,
            "pattern": f"{table.name}_embedding_space_{space_id}_g%",
            "keep": keep,
        },
    )
    return list(result.scalars())


async def record_build(
    conn: AsyncConnection, row_id: int, name: str, method: str, rows: int, seconds: float
) -> None:
    """Switch searches to the new index: from now on it is the table's index of record."""
    await conn.execute(
        update(vector_index)
        .where(vector_index.c.id == row_id)
        .values(
            index_name=name,
            method=method,
            generation=vector_index.c.generation + 1,
            rows_at_build=rows,
            built_at=func.now(),
            build_seconds=seconds,
            rebuild_requested_at=None,
            last_error=None,
        )
    )


async def record_error(conn: AsyncConnection, row_id: int, error: str) -> None:
    await conn.execute(
        update(vector_index).where(vector_index.c.id == row_id).values(last_error=error)
    )


async def request_rebuild(conn: AsyncConnection, space_id: int, table_name: str | None) -> int:
    """Mark the space's indexes (or one table's) for rebuild at the next pass."""
    statement = (
        update(vector_index)
        .where(vector_index.c.space_id == space_id, vector_index.c.index_name.is_not(None))
        .values(rebuild_requested_at=func.now())
    )
    if table_name is not None:
        statement = statement.where(vector_index.c.table_name == table_name)
    return (await conn.execute(statement)).rowcount


async def record_recall(
    conn: AsyncConnection, space_id: int, table_name: str, selectivity: str, value: dict[str, Any]
) -> None:
    """Set one selectivity class of the table's measured recall."""
    await conn.execute(
        update(vector_index)
        .where(vector_index.c.space_id == space_id, vector_index.c.table_name == table_name)
        .values(
            recall=vector_index.c.recall.op("||")(
                bindparam("recall", {selectivity: value}, type_=JSONB)
            )
        )
    )
