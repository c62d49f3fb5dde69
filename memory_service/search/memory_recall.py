"""Memory recall (`POST /v1/memories/search`): vector, keyword or hybrid, memories only.

The ranked lists, their statement and the fusion are `search.repository`'s and
`search.fusion`'s, in the `recall` shape that carries every public
column of a memory, so a recall is one round trip like `POST /v1/search`. What recall adds:

- `mode` defaults to `vector` (see `MemorySearch`), where `POST /v1/search` defaults to
  `hybrid`: recall existed before modes, and its clients rely on cosine scores and
  `min_score`;
- `min_score` filters the vector ranking after its index scan (a threshold never turns the
  scan into a sort), before fusion;
- a request may override the diskann query settings, within the bounds of `MemorySearch`.
"""

from collections.abc import Sequence

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.memories.schemas import MemorySearch, MemorySearchOut, SearchHit
from memory_service.providers.embedding import Vectors
from memory_service.search import fusion, repository
from memory_service.search.fusion import Candidate
from memory_service.search.repository import RankedMemory, Scope
from memory_service.search.searcher import Searcher, check_query


class MemoryRecall(Searcher):
    """Recall for one embedding space: `POST /v1/memories/search` and chat's memory context."""

    async def search(self, request: MemorySearch) -> MemorySearchOut:
        check_query(self.limits, request.k, request.query, request.filters)
        query_vector = await self.query_vector(request.mode, request.query)
        scope = Scope(request.namespace, request.filters, self.space)
        async with self.engine.begin() as conn:
            lists, exact = await self._ranked_lists(conn, request, scope, query_vector)
            rows = await repository.recall(conn, repository.combine(lists))
        if query_vector is not None and not exact:
            ranked = [(row.score, row.key) for row in rows if row.ranked_by == "vector"]
            self.sample("memory", scope, query_vector, request.k, ranked)
        if request.min_score is not None:
            threshold = request.min_score
            rows = [r for r in rows if r.ranked_by != "vector" or r.score >= threshold]
        best = fusion.fuse(rows, request.mode, request.k, request.rrf_k or self.rrf_k)
        return MemorySearchOut(
            results=hits(best, request),
            mode=request.mode,
            embedding_model=self.space.model,
        )

    async def _ranked_lists(
        self,
        conn: AsyncConnection,
        request: MemorySearch,
        scope: Scope,
        query_vector: Vectors | None,
    ) -> tuple[list[Select[object]], bool]:
        """The mode's ranked lists, and whether the vector list (if any) scans exactly; sets
        up the transaction for them on the way."""
        depth = fusion.depth(request.mode, request.k)
        lists: list[Select[object]] = []
        exact = False
        if query_vector is not None:
            tuned = self.vector_settings.overridden(request.search_list_size, request.rescore)
            plan = await tuned.plan(conn, "memory", scope, request.k)
            await tuned.apply(conn, [plan])
            exact = plan.exact
            lists.append(
                repository.vector_memories(scope, query_vector, depth, "recall", exact=exact)
            )
        if request.mode != "vector":
            terms = fusion.keyword_min_terms(request.mode)
            lists.append(repository.keyword_memories(scope, request.query, depth, "recall", terms))
        return lists, exact


def hits(best: Sequence[Candidate[RankedMemory]], request: MemorySearch) -> list[SearchHit]:
    return [
        SearchHit(
            **candidate.row.fields,
            score=candidate.score(request.mode),
            explain=candidate.explanation() if request.explain else None,
        )
        for candidate in best
    ]
