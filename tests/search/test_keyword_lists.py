"""The keyword lists (`search/repository.py`) against an exact answer at thousands of rows.

The lists rank the stored tsvectors of migration 0016 through their GIN indexes; the exact
answer parses every row's text again with a sequential scan, as the expression indexes
before it did. Memory texts are rewritten after insertion, so a stored tsvector that did
not follow its text would show.
"""

import hashlib
import random
from typing import Any

import numpy as np
from sqlalchemy import text

from memory_service.bootstrap import Resources
from memory_service.memories.schemas import MemoryFilters
from memory_service.search import repository
from memory_service.search.repository import Scope

NAMESPACE = "agent-1"
WORDS = (  # noqa: SIM905 (one string reads better than 35 quoted words)
    "river harbor engine orchard signal granite violet lantern meadow copper winter garden "
    "bridge market window thunder pencil circle mirror ladder forest candle silver pocket "
    "rabbit desert planet island shadow button velvet anchor kettle running runs"
).split()
QUERIES = [
    "copper bridge",
    "the winter market lantern",
    "running rabbit",
    "granite",
    "silver kettle anchor island",
    "nothing matches here",
]
MEMORIES, DOCUMENTS, CHUNKS_PER_DOCUMENT, DEPTH = 3_000, 20, 60, 40

# Ranks and filters from each row's text, parsed again, read by a sequential scan.
_EXACT = """
WITH q AS (
    SELECT replace(plainto_tsquery('english', :query)::text, ' & ', ' | ')::tsquery AS any,
           tsvector_to_array(to_tsvector('english', :query)) AS lexemes
)
SELECT {id}, ts_rank_cd(to_tsvector('english', {text}), q.any) AS score
FROM {source}, q
WHERE {scope} AND to_tsvector('english', {text}) @@ q.any
  AND (SELECT count(*) FROM unnest(tsvector_to_array(to_tsvector('english', {text}))) AS l
       WHERE l = ANY(q.lexemes)) >= least(:min_terms, cardinality(q.lexemes))
"""
_SOURCES = {
    "memory": ("memory.id", "memory.content", "memory", "memory.namespace = :namespace"),
    "document": (
        "chunk.id",
        "chunk.text",
        "chunk JOIN document ON document.id = chunk.document_id",
        "document.namespace = :namespace",
    ),
}
_SEQUENTIAL = ("enable_indexscan", "enable_bitmapscan")


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "."


class TestKeywordLists:
    async def test_the_lists_rank_as_the_parsed_texts_do_over_thousands_of_rows(
        self, resources: Resources
    ) -> None:
        await _corpus(resources, random.Random(11))
        scope = Scope(NAMESPACE, MemoryFilters(), resources.space)
        compared = 0
        for query in QUERIES:
            for min_terms in (1, 2):
                lists = [
                    repository.keyword_memories(scope, query, DEPTH, min_terms=min_terms),
                    repository.keyword_chunks(scope, query, DEPTH, min_terms=min_terms),
                ]
                async with resources.engine.connect() as conn:
                    rows = await repository.search(conn, repository.combine(lists))
                for source in ("memory", "document"):
                    found = {row.id: row.score for row in rows if row.source == source}
                    exact = await _exact(resources, source, query, min_terms)
                    _assert_same_top(found, exact, f"{query!r} {source} min_terms={min_terms}")
                    compared += len(exact)
        assert compared > 10_000, "the queries matched too few rows to tell"


def _assert_same_top(found: dict[str, float], exact: dict[str, float], what: str) -> None:
    """`found` is the best DEPTH of `exact`: each score is its exact score, and the scores
    are the best ones (rows tied at the cut may be any of them)."""
    best = sorted(exact.values(), reverse=True)[:DEPTH]
    assert len(found) == len(best), what
    for row_id, score in found.items():
        assert row_id in exact, f"{what}: {row_id} does not match the query"
        assert np.isclose(score, exact[row_id]), f"{what}: {row_id} ranked {score}"
    assert np.allclose(sorted(found.values(), reverse=True), best), what


async def _exact(resources: Resources, source: str, query: str, min_terms: int) -> dict[str, float]:
    key, column, relation, scope = _SOURCES[source]
    statement = _EXACT.format(id=key, text=column, source=relation, scope=scope)
    async with resources.engine.begin() as conn:
        for setting in _SEQUENTIAL:
            await conn.execute(text(f"SET LOCAL {setting} = off"))
        rows = await conn.execute(
            text(statement),
            {"query": query, "namespace": NAMESPACE, "min_terms": min_terms},
        )
        return {str(row_id): float(score) for row_id, score in rows}


async def _corpus(resources: Resources, rng: random.Random) -> None:
    """MEMORIES memories, a third of them rewritten, and DOCUMENTS documents of
    CHUNKS_PER_DOCUMENT chunks, in NAMESPACE; then ANALYZE, as autovacuum would."""
    space = resources.space
    contents = list({sentence(rng) for _ in range(MEMORIES)})
    memories: list[dict[str, Any]] = [
        {"content": c, "hash": hashlib.sha256(c.encode()).digest()} for c in contents
    ]
    vector = "[" + ",".join(["0.05"] * space.dimension) + "]"
    async with resources.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO memory (namespace, content, content_hash, space_id) "
                "VALUES (:namespace, :content, :hash, :space)"
            ),
            [{"namespace": NAMESPACE, "space": space.id, **m} for m in memories],
        )
        await conn.execute(
            text(
                "UPDATE memory SET content = content || ' ' || :extra "
                "WHERE namespace = :namespace AND get_byte(content_hash, 0) < 85"
            ),
            {"extra": "running copper lantern", "namespace": NAMESPACE},
        )
        for number in range(DOCUMENTS):
            document_id = (
                await conn.execute(
                    text(
                        "INSERT INTO document (namespace, source_uri, content_hash, chunking, "
                        "chunk_count, space_id) VALUES (:namespace, :uri, :hash, 'test', "
                        ":count, :space) RETURNING id"
                    ),
                    {
                        "namespace": NAMESPACE,
                        "uri": f"file:///doc-{number}.txt",
                        "hash": bytes([number]),
                        "count": CHUNKS_PER_DOCUMENT,
                        "space": space.id,
                    },
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO chunk (document_id, ordinal, text, token_count, space_id, "
                    "embedding) VALUES (:document, :ordinal, :text, 1, :space, "
                    "CAST(:vector AS vector))"
                ),
                [
                    {
                        "document": document_id,
                        "ordinal": ordinal,
                        "text": " ".join(sentence(rng) for _ in range(8)),
                        "space": space.id,
                        "vector": vector,
                    }
                    for ordinal in range(CHUNKS_PER_DOCUMENT)
                ],
            )
        await conn.execute(text("ANALYZE memory, document, chunk"))
