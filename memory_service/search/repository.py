"""All SQL of the search domain. Functions take a connection; callers own the transaction.

A search is one statement: a UNION ALL of up to four ranked lists, (vector | keyword) x
(memories | chunks), each an ordered, limited subquery of its own so that each keeps the
shape its index serves:

- vector: `ORDER BY embedding <=> :query LIMIT :depth` over embedded, live memories and the
  chunks of the service's embedding space, served by the space's diskann (or HNSW) index,
  merged with an exact sort of the few rows written while a build ran (`_nearest_rows`);
- keyword: `ts_rank_cd` of the stored `to_tsvector('english', text)` (`content_tsv`,
  `text_tsv`: migration 0016) against the query's lexemes joined with OR, filtered with `@@`
  so the GIN index serves it. OR gives the "any term matches, more and rarer terms rank
  higher" recall of BM25; `plainto_tsquery` would demand every term. In hybrid mode a row
  must also hold two distinct query terms (all of a shorter query;
  `fusion.HYBRID_KEYWORD_MIN_TERMS` says why). This is core PostgreSQL on purpose:
  pg_textsearch's `bm25` index wedged concurrent UPDATEs forever (migration 0007 says why it
  was dropped).

Keyword lists take memories in every status (pending and failed ones too: their text is
committed before any vector exists) but never expired ones. Both modes read only the rows
of the service's embedding space. Chunks take their namespace, metadata and `created_at`
from their document.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Float,
    Integer,
    Select,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.db import estimated_rows
from memory_service.core.tables import chunk, document, memory
from memory_service.embeddings.spaces import EmbeddingSpace

# One definition of "not expired" for every reader of memories.
from memory_service.memories.repository import PUBLIC_COLUMNS, filter_clauses, live
from memory_service.memories.schemas import MemoryFilters
from memory_service.providers.embedding import Vectors

RankedBy = Literal["vector", "keyword"]
VectorTable = Literal["memory", "chunk"]
# The ANN index methods: pgvectorscale's StreamingDiskANN and pgvector's HNSW.
IndexMethod = Literal["diskann", "hnsw"]
# The columns a memory list selects: `result` is the shape `POST /v1/search` shares with
# chunks; `recall` is every public column of the memory, for memory recall.
MemoryShape = Literal["result", "recall"]


@dataclass(frozen=True)
class Scope:
    """What a search reads: the namespace, the filters and the embedding space."""

    namespace: str
    filters: MemoryFilters
    space: EmbeddingSpace


@dataclass(frozen=True)
class RankedRow:
    ranked_by: RankedBy
    source: Literal["memory", "document"]
    id: str
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    document_id: UUID | None
    title: str | None
    source_uri: str | None
    ordinal: int | None
    score: float

    @property
    def key(self) -> str:
        return f"{self.source}:{self.id}"


@dataclass(frozen=True)
class RankedMemory:
    """A memory in a ranked list, with every public column: a row of memory recall."""

    ranked_by: RankedBy
    score: float
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.fields["id"])


_RANKED_BY: dict[RankedBy, ColumnElement[str]] = {
    "vector": literal_column("'vector'", Text),
    "keyword": literal_column("'keyword'", Text),
}


def _memory_select(ranked_by: RankedBy, score: ColumnElement[float]) -> Select[Any]:
    return select(
        _RANKED_BY[ranked_by].label("ranked_by"),
        literal_column("'memory'", Text).label("source"),
        cast(memory.c.id, Text).label("id"),
        memory.c.content.label("content"),
        memory.c.metadata.label("metadata"),
        memory.c.created_at.label("created_at"),
        cast(null(), PG_UUID(as_uuid=True)).label("document_id"),
        cast(null(), Text).label("title"),
        cast(null(), Text).label("source_uri"),
        cast(null(), Integer).label("ordinal"),
        cast(score, Float).label("score"),
    )


def _recall_select(ranked_by: RankedBy, score: ColumnElement[float]) -> Select[Any]:
    return select(
        _RANKED_BY[ranked_by].label("ranked_by"), *PUBLIC_COLUMNS, cast(score, Float).label("score")
    )


_MEMORY_SELECTS = {"result": _memory_select, "recall": _recall_select}


def _chunk_select(ranked_by: RankedBy, score: ColumnElement[float]) -> Select[Any]:
    return select(
        _RANKED_BY[ranked_by].label("ranked_by"),
        literal_column("'document'", Text).label("source"),
        cast(chunk.c.id, Text).label("id"),
        chunk.c.text.label("content"),
        document.c.metadata.label("metadata"),
        document.c.created_at.label("created_at"),
        chunk.c.document_id.label("document_id"),
        document.c.title.label("title"),
        document.c.source_uri.label("source_uri"),
        chunk.c.ordinal.label("ordinal"),
        cast(score, Float).label("score"),
    ).join_from(chunk, document, chunk.c.document_id == document.c.id)


def _memory_scope(scope: Scope) -> list[ColumnElement[bool]]:
    return [
        memory.c.space_id == scope.space.id,
        live(),
        *filter_clauses(scope.namespace, scope.filters),
    ]


def _chunk_scope(scope: Scope) -> list[ColumnElement[bool]]:
    """The filters that apply to chunks: see `SearchRequest` for which those are."""
    clauses = [chunk.c.space_id == scope.space.id, document.c.namespace == scope.namespace]
    if scope.filters.metadata:
        clauses.append(document.c.metadata.contains(scope.filters.metadata))
    if scope.filters.created_after is not None:
        clauses.append(document.c.created_at > scope.filters.created_after)
    if scope.filters.created_before is not None:
        clauses.append(document.c.created_at < scope.filters.created_before)
    return clauses


def _scope_rows(table: VectorTable, scope: Scope) -> Select[Any]:
    """The rows with vectors a vector search of `scope` could return."""
    if table == "memory":
        return select(literal(1)).where(memory.c.status == "embedded", *_memory_scope(scope))
    return (
        select(literal(1))
        .select_from(chunk.join(document, chunk.c.document_id == document.c.id))
        .where(*_chunk_scope(scope))
    )


async def count_scope(conn: AsyncConnection, table: VectorTable, scope: Scope) -> int:
    """Exactly (a scan: the recall sampler's question, off the request path)."""
    statement = select(func.count()).select_from(_scope_rows(table, scope).subquery())
    return int((await conn.execute(statement)).scalar_one())


async def estimate_scope(conn: AsyncConnection, table: VectorTable, scope: Scope) -> float:
    """The planner's estimate (no scan: what a search plans by)."""
    return await estimated_rows(conn, _scope_rows(table, scope))


async def estimate_space(conn: AsyncConnection, table: VectorTable, space: EmbeddingSpace) -> float:
    """The planner's estimate of the rows with vectors in `table` for `space`: what its
    vector index holds."""
    column = memory.c if table == "memory" else chunk.c
    statement = select(literal(1)).where(column.space_id == space.id, column.embedding.is_not(None))
    return await estimated_rows(conn, statement)


def _nearest(distance: ColumnElement[float], exact: bool) -> ColumnElement[float]:
    """The ORDER BY of a vector list. `ORDER BY embedding <=> :query` is what an ANN index
    serves; `exact` adds 0, an expression no index can serve, so the rows the filters select
    are sorted by their true distance: exact over the scope, whatever the planner thinks."""
    return distance + literal_column("0") if exact else distance


def vector_memories(
    scope: Scope,
    query_vector: Vectors,
    depth: int,
    shape: MemoryShape = "result",
    *,
    exact: bool = False,
) -> Select[Any]:
    """Memories with a vector nearest the query, by cosine similarity."""
    distance = memory.c.embedding.cosine_distance(query_vector)
    rows = _MEMORY_SELECTS[shape]("vector", 1 - distance).where(
        memory.c.status == "embedded", *_memory_scope(scope)
    )
    return _nearest_rows(rows, memory, distance, depth, exact)


def vector_chunks(
    scope: Scope, query_vector: Vectors, depth: int, *, exact: bool = False
) -> Select[Any]:
    distance = chunk.c.embedding.cosine_distance(query_vector)
    rows = _chunk_select("vector", 1 - distance).where(*_chunk_scope(scope))
    return _nearest_rows(rows, chunk, distance, depth, exact)


def in_index(table: Table) -> list[ColumnElement[bool]]:
    """The rows an ANN index of `table` holds in any space: `in_index` with a vector. The
    lifecycle's index predicate and the vector lists spell it with these same clauses, so
    the planner can prove that the index holds a list's rows. `IS NOT NULL` appears only
    where the column is nullable: PostgreSQL 17 and later drop it from a query on a NOT
    NULL column, and a predicate that kept it could then never be proven."""
    clauses: list[ColumnElement[bool]] = [table.c.in_index]
    if table.c.embedding.nullable:
        clauses.append(table.c.embedding.is_not(None))
    return clauses


def _nearest_rows(
    rows: Select[Any], table: Table, distance: ColumnElement[float], depth: int, exact: bool
) -> Select[Any]:
    """The `depth` of `rows` nearest the query. Exact: one sort of them all. Otherwise two
    lists merged by score: the ANN index over the rows it holds (`in_index`, with a vector:
    its predicate, spelled the same so the planner can prove it), and an exact sort of the
    tail, the rows written while a build ran (migration 0009), found through the tail's
    partial index. The tail is empty outside diskann builds and the drain after each."""
    if exact:
        return rows.order_by(_nearest(distance, exact=True)).limit(depth)
    indexed = rows.where(*in_index(table)).order_by(_nearest(distance, exact=False)).limit(depth)
    tail = rows.where(~table.c.in_index).order_by(_nearest(distance, exact=True)).limit(depth)
    merged = union_all(select(indexed.subquery()), select(tail.subquery())).subquery()
    return select(*merged.c).order_by(merged.c.score.desc()).limit(depth)


def _any_term_tsquery(query: str) -> ColumnElement[Any]:
    """The query's English lexemes joined with OR. Lexemes never hold spaces, so replacing
    the ' & ' that `plainto_tsquery` puts between them is safe."""
    all_terms = func.plainto_tsquery(literal_column("'english'"), bindparam(None, query, Text))
    return cast(func.replace(cast(all_terms, Text), " & ", " | "), TSQUERY)


def keyword_memories(
    scope: Scope, query: str, depth: int, shape: MemoryShape = "result", min_terms: int = 1
) -> Select[Any]:
    """Memories in every status (pending ones too) best by keyword."""
    return _keyword(
        _MEMORY_SELECTS[shape], memory.c.content_tsv, _memory_scope(scope), query, depth, min_terms
    )


def keyword_chunks(scope: Scope, query: str, depth: int, min_terms: int = 1) -> Select[Any]:
    return _keyword(_chunk_select, chunk.c.text_tsv, _chunk_scope(scope), query, depth, min_terms)


def _keyword(
    select_for: Callable[[RankedBy, ColumnElement[float]], Select[Any]],
    vector: ColumnElement[Any],
    scope: Sequence[ColumnElement[bool]],
    query: str,
    depth: int,
    min_terms: int,
) -> Select[Any]:
    """The best `depth` rows by full-text rank of their stored tsvector `vector`, over the
    rows that match any query term, or at least `min_terms` distinct query terms (all of
    them, when the query has fewer)."""
    tsquery = _any_term_tsquery(query)
    rank = func.ts_rank_cd(vector, tsquery)
    clauses = [vector.op("@@")(tsquery), *scope]
    if min_terms > 1:
        clauses.append(_terms_matched(vector, query) >= func.least(min_terms, _term_count(query)))
    return select_for("keyword", rank).where(*clauses).order_by(rank.desc()).limit(depth)


def _query_lexemes(query: str) -> ColumnElement[Any]:
    return func.tsvector_to_array(
        func.to_tsvector(literal_column("'english'"), bindparam(None, query, Text))
    )


def _term_count(query: str) -> ColumnElement[int]:
    return func.cardinality(_query_lexemes(query))


def _terms_matched(vector: ColumnElement[Any], query: str) -> ColumnElement[int]:
    """How many distinct query lexemes the row's tsvector holds (evaluated only on the rows
    the GIN index found for the OR query)."""
    row_lexemes = (
        func.unnest(func.tsvector_to_array(vector)).table_valued("lexeme").render_derived()
    )
    return (
        select(func.count())
        .select_from(row_lexemes)
        .where(row_lexemes.c.lexeme == any_(_query_lexemes(query)))
        .scalar_subquery()
    )


def combine(lists: Sequence[Select[Any]]) -> Select[Any] | CompoundSelect[Any]:
    """The ranked lists as one statement. Each stays a parenthesized subquery with its own
    ORDER BY and LIMIT, which is the shape its index serves."""
    wrapped = [select(ranked.subquery()) for ranked in lists]
    return wrapped[0] if len(wrapped) == 1 else union_all(*wrapped)


async def search(
    conn: AsyncConnection, statement: Select[Any] | CompoundSelect[Any]
) -> list[RankedRow]:
    return [RankedRow(**row._mapping) for row in await conn.execute(statement)]


async def recall(
    conn: AsyncConnection, statement: Select[Any] | CompoundSelect[Any]
) -> list[RankedMemory]:
    """The rows of a statement of `recall`-shaped memory lists."""
    rows = []
    for row in await conn.execute(statement):
        fields = dict(row._mapping)
        rows.append(RankedMemory(fields.pop("ranked_by"), fields.pop("score"), fields))
    return rows
