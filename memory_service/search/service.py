"""Search use cases: vector, keyword and hybrid search over memories and document chunks.

Hybrid search is reciprocal rank fusion (RRF): a result's score is the sum, over the vector
and keyword rankings that hold it, of `1 / (rrf_k + rank)`, ranks counted from 1. RRF needs
no score calibration between cosine similarity and BM25, which live on unrelated scales.
Each ranking is fetched `max(4 * k, 20)` deep: a result ranked just outside the top k by
both modes can still win on the sum, and 20 keeps small k from starving the fusion; deeper
lists cost index work and change the fused top k rarely.

Within one mode, memories and chunks form one ranking, merged by score: cosine similarity
is one scale across both (one embedding space); BM25 of the two tables comes from two
indexes with their own corpus statistics, an approximation accepted for a merged list.
Keyword mode needs no embedder: it keeps working while every embedder is down.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.db import set_local
from memory_service.core.errors import (
    EmbedderUnavailable,
    InputRejected,
    InputTooLong,
    LimitExceeded,
)
from memory_service.core.settings import Limits
from memory_service.embeddings.provider import (
    EmbeddingProvider,
    ProviderError,
    ProviderInputError,
    Vectors,
)
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.memories.service import VectorSettings
from memory_service.search import repository
from memory_service.search.repository import KeywordStrategy, RankedRow, Scope
from memory_service.search.schemas import (
    Explanation,
    SearchRequest,
    SearchResponse,
    SearchResult,
)

# How deep each ranking is fetched for hybrid search: see the module docstring.
HYBRID_DEPTH_FACTOR = 4
HYBRID_MIN_DEPTH = 20


@dataclass
class Ranking:
    """One mode's ranking of a result (rank counts from 1)."""

    rank: int
    score: float


@dataclass
class Candidate:
    row: RankedRow
    vector: Ranking | None = None
    keyword: Ranking | None = None
    fused: float | None = None


@dataclass
class SearchService:
    engine: AsyncEngine
    embedder: EmbeddingProvider
    space: EmbeddingSpace
    limits: Limits
    rrf_k: int = 60
    vector_settings: VectorSettings = field(default_factory=VectorSettings)
    # None: detected at the first search (`repository.keyword_strategy`). Set it to force one.
    keyword_strategy: KeywordStrategy | None = None

    async def search(self, request: SearchRequest) -> SearchResponse:
        self._check_limits(request)
        depth = (
            max(HYBRID_DEPTH_FACTOR * request.k, HYBRID_MIN_DEPTH)
            if request.mode == "hybrid"
            else request.k
        )
        query_vector = await self._embed_query(request.query) if request.mode != "keyword" else None
        scope = Scope(request.namespace, request.filters, self.space)
        async with self.engine.begin() as conn:
            if query_vector is not None:
                await self._set_vector_settings(conn)
            if self.keyword_strategy is None and request.mode != "vector":
                self.keyword_strategy = await repository.keyword_strategy(conn)
            lists = self._ranked_lists(request, scope, query_vector, depth)
            rows = await repository.search(conn, repository.combine(lists))
        candidates = rank(rows, depth)
        rrf_k = request.rrf_k or self.rrf_k
        ordered = order(candidates, request.mode, rrf_k)[: request.k]
        return SearchResponse(
            results=[to_result(candidate, request.mode, request.explain) for candidate in ordered],
            mode=request.mode,
            embedding_model=self.space.model,
        )

    def _ranked_lists(
        self, request: SearchRequest, scope: Scope, query_vector: Vectors | None, depth: int
    ) -> list[Select[object]]:
        sources = set(request.sources)
        lists: list[Select[object]] = []
        if query_vector is not None:
            if "memories" in sources:
                lists.append(repository.vector_memories(scope, query_vector, depth))
            if "documents" in sources:
                lists.append(repository.vector_chunks(scope, query_vector, depth))
        if request.mode != "vector":
            strategy = self.keyword_strategy or "fts"
            if "memories" in sources:
                lists.append(repository.keyword_memories(scope, request.query, depth, strategy))
            if "documents" in sources:
                lists.append(repository.keyword_chunks(scope, request.query, depth, strategy))
        return lists

    async def _set_vector_settings(self, conn: AsyncConnection) -> None:
        """The diskann query settings, for this search's transaction only."""
        await set_local(
            conn, "diskann.query_search_list_size", str(self.vector_settings.search_list_size)
        )
        await set_local(conn, "diskann.query_rescore", str(self.vector_settings.rescore))

    def _check_limits(self, request: SearchRequest) -> None:
        if request.k > self.limits.max_k:
            raise LimitExceeded(
                f"k is at most {self.limits.max_k}",
                {"field": "k", "limit": self.limits.max_k, "actual": request.k},
            )
        if len(request.query) > self.limits.max_query_chars:
            raise LimitExceeded(
                f"query is {len(request.query)} characters, "
                f"the limit is {self.limits.max_query_chars}",
                {
                    "field": "query",
                    "limit": self.limits.max_query_chars,
                    "actual": len(request.query),
                },
            )

    async def _embed_query(self, query: str) -> Vectors:
        counts = await self.embedder.count_tokens([query])
        window = self.embedder.max_input_tokens
        if counts is not None and counts[0] > window:
            raise InputTooLong(
                f"query is {counts[0]} tokens long; {self.space.model} reads at most {window}. "
                "Shorten it, or search in keyword mode: text is never truncated.",
                {"field": "query", "tokens": counts[0], "max_tokens": window},
            )
        try:
            vectors = await self.embedder.embed([query])
        except ProviderInputError as exc:
            raise InputRejected(
                f"the embedder refused the query: {exc}", {"field": "query"}
            ) from exc
        except ProviderError as exc:
            raise EmbedderUnavailable(
                "no embedder is available for this search; retry shortly, "
                "or search in keyword mode",
                {"provider": exc.provider, "space": self.space.name},
            ) from exc
        query_vector: Vectors = vectors[0]
        return query_vector


def rank(rows: Iterable[RankedRow], depth: int) -> list[Candidate]:
    """One candidate per result, with its rank in each mode's merged ranking (top `depth`)."""
    candidates: dict[tuple[str, str], Candidate] = {}
    for ranked_by in ("vector", "keyword"):
        ranked = sorted(
            (row for row in rows if row.ranked_by == ranked_by), key=lambda row: -row.score
        )
        for position, row in enumerate(ranked[:depth], start=1):
            candidate = candidates.setdefault((row.source, row.id), Candidate(row))
            setattr(candidate, ranked_by, Ranking(position, row.score))
    return list(candidates.values())


def order(candidates: Sequence[Candidate], mode: str, rrf_k: int) -> list[Candidate]:
    """Best first. Hybrid: by fused score, ties to the better single rank, then by id."""
    if mode == "vector":
        found = [c for c in candidates if c.vector is not None]
        return sorted(found, key=lambda c: c.vector.rank if c.vector else 0)
    if mode == "keyword":
        found = [c for c in candidates if c.keyword is not None]
        return sorted(found, key=lambda c: c.keyword.rank if c.keyword else 0)
    for candidate in candidates:
        rankings = [r for r in (candidate.vector, candidate.keyword) if r is not None]
        candidate.fused = sum(1 / (rrf_k + ranking.rank) for ranking in rankings)

    def key(candidate: Candidate) -> tuple[float, int, str, str]:
        best = min(r.rank for r in (candidate.vector, candidate.keyword) if r is not None)
        return (-(candidate.fused or 0.0), best, candidate.row.source, candidate.row.id)

    return sorted(candidates, key=key)


def to_result(candidate: Candidate, mode: str, explain: bool) -> SearchResult:
    row = candidate.row
    chosen = {"vector": candidate.vector, "keyword": candidate.keyword}.get(mode)
    score = chosen.score if chosen is not None else candidate.fused or 0.0
    explanation = None
    if explain:
        explanation = Explanation(
            vector_rank=candidate.vector.rank if candidate.vector else None,
            vector_score=candidate.vector.score if candidate.vector else None,
            keyword_rank=candidate.keyword.rank if candidate.keyword else None,
            keyword_score=candidate.keyword.score if candidate.keyword else None,
            fused_score=candidate.fused,
        )
    return SearchResult(
        source=row.source,
        id=row.id,
        content=row.content,
        score=score,
        metadata=row.metadata,
        created_at=row.created_at,
        document_id=row.document_id,
        title=row.title,
        source_uri=row.source_uri,
        ordinal=row.ordinal,
        explain=explanation,
    )
