"""Search use cases: vector, keyword and hybrid search over memories and document chunks.

Ranking and fusion are `search.fusion`'s (shared with memory recall). Within one mode,
memories and chunks form one ranking, merged by score: cosine similarity is one scale across
both (one embedding space); full-text rank has no corpus statistics, so it is one scale
across both tables too. Keyword mode needs no
embedder: it keeps working while every embedder is down.
"""

from sqlalchemy import Select

from memory_service.memories.schemas import SearchMode
from memory_service.providers.embedding import Vectors
from memory_service.search import fusion, repository
from memory_service.search.fusion import Candidate
from memory_service.search.repository import RankedRow, Scope, VectorTable
from memory_service.search.schemas import SearchRequest, SearchResponse, SearchResult, Source
from memory_service.search.searcher import Searcher, check_query

# A request's source, the table its vectors live in, and the `source` of its result rows.
_VECTOR_TABLES: dict[Source, VectorTable] = {"memories": "memory", "documents": "chunk"}
_SOURCE_OF: dict[Source, str] = {"memories": "memory", "documents": "document"}


class SearchService(Searcher):
    async def search(self, request: SearchRequest) -> SearchResponse:
        check_query(self.limits, request.k, request.query, request.filters)
        depth = fusion.depth(request.mode, request.k)
        query_vector = await self.query_vector(request.mode, request.query)
        scope = Scope(request.namespace, request.filters, self.space)
        tables = [_VECTOR_TABLES[source] for source in request.sources]
        async with self.engine.begin() as conn:
            exact: dict[VectorTable, bool] = {}
            if query_vector is not None:
                plans = {
                    table: await self.vector_settings.plan(conn, table, scope, request.k)
                    for table in tables
                }
                await self.vector_settings.apply(conn, plans.values())
                exact = {table: plan.exact for table, plan in plans.items()}
            lists = self._ranked_lists(request, scope, query_vector, depth, exact)
            rows = await repository.search(conn, repository.combine(lists))
        if query_vector is not None:
            for source in request.sources:
                if not exact[_VECTOR_TABLES[source]]:
                    ranked = [
                        (row.score, row.id)
                        for row in rows
                        if row.ranked_by == "vector" and row.source == _SOURCE_OF[source]
                    ]
                    self.sample(_VECTOR_TABLES[source], scope, query_vector, request.k, ranked)
        best = fusion.fuse(rows, request.mode, request.k, request.rrf_k or self.rrf_k)
        return SearchResponse(
            results=[to_result(candidate, request.mode, request.explain) for candidate in best],
            mode=request.mode,
            embedding_model=self.space.model,
        )

    def _ranked_lists(
        self,
        request: SearchRequest,
        scope: Scope,
        query_vector: Vectors | None,
        depth: int,
        exact: dict[VectorTable, bool],
    ) -> list[Select[object]]:
        sources = set(request.sources)
        lists: list[Select[object]] = []
        if query_vector is not None:
            if "memories" in sources:
                lists.append(
                    repository.vector_memories(scope, query_vector, depth, exact=exact["memory"])
                )
            if "documents" in sources:
                lists.append(
                    repository.vector_chunks(scope, query_vector, depth, exact=exact["chunk"])
                )
        if request.mode != "vector":
            terms = fusion.keyword_min_terms(request.mode)
            if "memories" in sources:
                lists.append(
                    repository.keyword_memories(scope, request.query, depth, min_terms=terms)
                )
            if "documents" in sources:
                lists.append(repository.keyword_chunks(scope, request.query, depth, terms))
        return lists


def to_result(candidate: Candidate[RankedRow], mode: SearchMode, explain: bool) -> SearchResult:
    row = candidate.row
    return SearchResult(
        source=row.source,
        id=row.id,
        content=row.content,
        score=candidate.score(mode),
        metadata=row.metadata,
        created_at=row.created_at,
        document_id=row.document_id,
        title=row.title,
        source_uri=row.source_uri,
        ordinal=row.ordinal,
        explain=candidate.explanation() if explain else None,
    )
