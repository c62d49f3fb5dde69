"""What every search does before its statement: check limits, embed the query, plan each
vector list (exact, or the index with the settings its scope needs) and set the index's
query settings for its transaction.

Shared by `POST /v1/search` and memory recall, so both refuse and fail the same way: a query
over the model's window is rejected (never truncated), and an embedder outage is a 503 that
points at keyword mode, which needs no embedder.
"""

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import set_local
from memory_service.core.errors import EmbedderUnavailable, InputRejected, Overloaded
from memory_service.core.limits import at_most, within_window
from memory_service.core.settings import Limits
from memory_service.embeddings.port import Embedder
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.memories.schemas import MemoryFilters, SearchMode
from memory_service.providers.embedding import Vectors
from memory_service.providers.errors import EmbedQueueFull, ProviderError, ProviderInputError
from memory_service.search import repository
from memory_service.search.recall import RecallSampler
from memory_service.search.repository import IndexMethod, Scope, VectorTable


def check_query(limits: Limits, k: int, query: str, filters: MemoryFilters) -> None:
    """Raise LimitExceeded when `k`, the query's length or a filter is over the configured
    limits."""
    at_most("k", k, limits.max_k, "results")
    at_most("query", len(query), limits.max_query_chars)
    filters.check(limits)


async def embed_query(embedder: Embedder, query: str) -> Vectors:
    """The query's vector. Raises InputTooLong (over the model's window, where the service
    can count), InputRejected (the embedder refused it) or EmbedderUnavailable."""
    counts = await embedder.count_tokens([query])
    if counts is not None:
        within_window(
            "query",
            counts[0],
            embedder.window,
            embedder.space.model,
            advice="Shorten it, or search in keyword mode",
        )
    try:
        embedding = await embedder.embed([query])
    except ProviderInputError as exc:
        raise InputRejected(f"the embedder refused the query: {exc}", {"field": "query"}) from exc
    except EmbedQueueFull as exc:
        raise Overloaded(
            "too many texts wait for the embedder; retry shortly, or search in keyword mode",
            {"space": embedder.space.name},
        ) from exc
    except ProviderError as exc:
        raise EmbedderUnavailable(
            "no embedder is available for this search; retry shortly, or search in keyword mode",
            {"provider": exc.provider, "space": embedder.space.name},
        ) from exc
    query_vector: Vectors = embedding.vectors[0]
    return query_vector


# The diskann rescore window a filtered list gets, per result wanted and per unit of the
# scope's share of the index. pgvectorscale streams index entries in the order of their
# 1-bit quantized (SBQ) distance and re-sorts them by the true distance in a sliding window
# of `diskann.query_rescore` entries (its scan.rs); a list whose filter keeps a share s of
# the rows reads about k/s entries to find k in scope, and the quantized order is off by
# about that much, so the window has to grow with k/s. search_list_size (the graph beam)
# changed nothing. Measured at 100k rows, 10% scope, k=10 (docs/benchmarks.md): a window of
# 2·k/s gave recall@10 0.935, 4·k/s 0.976, 8·k/s 0.992. The window is sized for the k the
# caller wants, not for a hybrid list's deeper fetch: fusion weighs the top ranks most.
RESCORE_PER_ENTRY_READ = 4
# pgvectorscale's bound on diskann.query_rescore.
MAX_RESCORE = 1000
# An exact scan of this many scope rows costs about what one rescore window entry does
# (100k rows: exact 1.37 ms per 1,000 rows through a B-tree, the index 0.019 ms per window
# entry). A scope that would need a window over MAX_RESCORE is scanned exactly up to
# EXACT_ROWS_PER_ENTRY * MAX_RESCORE rows; a larger one uses the widest window and may fall
# short of the recall target (the sampler measures it), rather than scan without bound.
EXACT_ROWS_PER_ENTRY = 14


@dataclass
class IndexedRows:
    """The planner's estimate of the rows each vector table holds for a space, kept for
    `ttl_seconds`: a share needs only its order of magnitude, and asking on every search
    would add a round trip to each diskann list."""

    ttl_seconds: float = 60.0
    _estimates: dict[tuple[VectorTable, int], tuple[float, float]] = field(default_factory=dict)

    async def of(self, conn: AsyncConnection, table: VectorTable, space: EmbeddingSpace) -> float:
        now = time.monotonic()
        cached = self._estimates.get((table, space.id))
        if cached is not None and now - cached[1] < self.ttl_seconds:
            return cached[0]
        rows = await repository.estimate_space(conn, table, space)
        self._estimates[(table, space.id)] = (rows, now)
        return rows


@dataclass(frozen=True)
class VectorPlan:
    """How one vector list runs: an exact scan of its scope, or the index with this
    `diskann.query_rescore`."""

    exact: bool
    rescore: int


@dataclass(frozen=True)
class VectorSettings:
    """How vector lists are planned and run: diskann query settings, set per transaction (a
    search request may override them), and the scope size below which a list scans exactly."""

    search_list_size: int = 100
    rescore: int = 50
    # A scope the planner estimates below this many rows is searched exactly: an exact scan
    # of so few rows (found through a B-tree or GIN index of the filter) is fast, while the
    # ANN index filtered down to them needs a rescore window of thousands of entries.
    exact_scope_rows: int = 2_000
    # A request chose the rescore window: use it as given, never widened for a filter.
    fixed_rescore: bool = False
    # The index method of the space (`MEMORY_ANN_METHOD`, resolved at start). HNSW lists
    # run with pgvector's iterative scan, which keeps reading the graph until the filter
    # has let k rows through, so they need no window; `hnsw.ef_search` is its beam.
    method: IndexMethod = "diskann"
    ef_search: int = 100
    # Shared by the copies `overridden` makes.
    indexed_rows: IndexedRows = field(default_factory=IndexedRows, compare=False, repr=False)

    def overridden(self, search_list_size: int | None, rescore: int | None) -> "VectorSettings":
        """These settings with a request's overrides (None keeps the configured value)."""
        settings = self
        if search_list_size is not None:
            settings = replace(settings, search_list_size=search_list_size)
        if rescore is not None:
            settings = replace(settings, rescore=rescore, fixed_rescore=True)
        return settings

    async def plan(
        self, conn: AsyncConnection, table: VectorTable, scope: Scope, k: int
    ) -> VectorPlan:
        """Plan the top-`k` vector list of `table` over `scope` from the planner's estimates
        (an EXPLAIN of the scope, and the cached one of the index's rows; no scan): exact
        below `exact_scope_rows`, else the index with a rescore window of
        `RESCORE_PER_ENTRY_READ * k / share` (at least `rescore`); where that window would
        pass `MAX_RESCORE`, exact up to the rows such a window costs, else the widest
        window."""
        rows = await repository.estimate_scope(conn, table, scope)
        if rows < self.exact_scope_rows:
            return VectorPlan(exact=True, rescore=self.rescore)
        if self.fixed_rescore or self.method == "hnsw":
            return VectorPlan(exact=False, rescore=self.rescore)
        indexed = await self.indexed_rows.of(conn, table, scope.space)
        share = min(1.0, rows / indexed) if indexed > 0 else 1.0
        window = math.ceil(RESCORE_PER_ENTRY_READ * k / share)
        if window > MAX_RESCORE:
            if rows <= EXACT_ROWS_PER_ENTRY * MAX_RESCORE:
                return VectorPlan(exact=True, rescore=self.rescore)
            window = MAX_RESCORE
        return VectorPlan(exact=False, rescore=max(self.rescore, window))

    async def apply(self, conn: AsyncConnection, plans: Iterable[VectorPlan] = ()) -> None:
        """Set them for the rest of `conn`'s transaction only, with the widest rescore
        window the index-served `plans` need. The diskann settings are always set (a
        placeholder where vectorscale is absent); the HNSW ones only for HNSW, since
        pgvector before 0.8 has no `hnsw.iterative_scan` and may refuse it. While a
        rebuild switches methods, the old index serves with its own defaults."""
        if self.method == "hnsw":
            await set_local(conn, "hnsw.ef_search", str(self.ef_search))
            await set_local(conn, "hnsw.iterative_scan", "relaxed_order")
        rescore = max((plan.rescore for plan in plans if not plan.exact), default=self.rescore)
        await set_local(conn, "diskann.query_search_list_size", str(self.search_list_size))
        await set_local(conn, "diskann.query_rescore", str(rescore))


@dataclass(kw_only=True)
class Searcher:
    """What a search runs on; the base of `SearchService` and of memory recall."""

    engine: AsyncEngine
    embedder: Embedder
    limits: Limits
    rrf_k: int = 60
    vector_settings: VectorSettings = field(default_factory=VectorSettings)
    # Re-runs a fraction of vector searches exactly, off the request path (`search/recall.py`).
    sampler: RecallSampler | None = None

    @property
    def space(self) -> EmbeddingSpace:
        """The space of every vector this service writes or searches: its embedder's."""
        return self.embedder.space

    def sample(
        self,
        table: VectorTable,
        scope: Scope,
        query_vector: Vectors,
        k: int,
        ranked: Sequence[tuple[float, str]],
    ) -> None:
        """Offer a vector list served by an index (its (score, id) pairs, any order) to the
        recall sampler; an exact list has nothing to measure."""
        if self.sampler is not None:
            best = [key for _, key in sorted(ranked, key=lambda pair: -pair[0])]
            self.sampler.offer(table, scope, query_vector, k, best)

    async def query_vector(self, mode: SearchMode, query: str) -> Vectors | None:
        """The query's vector, or None in keyword mode (which needs no embedder)."""
        return None if mode == "keyword" else await embed_query(self.embedder, query)
