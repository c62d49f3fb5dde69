"""The statement a hybrid search runs: one round trip, each ranked list served by its index."""

import re
from typing import Any

import numpy as np
from sqlalchemy import ClauseElement, CompoundSelect, Executable, Select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from memory_service.bootstrap import Resources
from memory_service.memories.schemas import MemoryFilters
from memory_service.search import repository
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from memory_service.search.repository import Scope


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, compiled with its bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any] | CompoundSelect[Any], verbose: bool) -> None:
        self.statement = statement
        self.verbose = verbose


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    keyword = "EXPLAIN VERBOSE " if element.verbose else "EXPLAIN "
    return keyword + compiler.process(element.statement, **kw)


async def explain(
    resources: Resources,
    statement: Select[Any] | CompoundSelect[Any],
    *setup: str,
    verbose: bool = False,
) -> str:
    async with resources.engine.begin() as conn:
        # Empty tables favour sequential scans and sorts; the question is whether the
        # statement's shape lets the planner use each index at all.
        for statement_text in (
            "SET LOCAL enable_seqscan = off",
            "SET LOCAL enable_sort = off",
            *setup,
        ):
            await conn.execute(text(statement_text))
        return "\n".join((await conn.execute(Explain(statement, verbose))).scalars())


class TestHybridStatement:
    async def test_vector_lists_use_their_ann_indexes(self, resources: Resources) -> None:
        space = resources.space
        # Built on empty tables (min_rows 0) only to look at the plan's shape.
        maintainer = IndexMaintainer(
            engine=resources.engine, space_id=space.id, policy=IndexPolicy(0, 2.0)
        )
        assert await maintainer.maintain() == {"memory": "built", "chunk": "built"}
        names: dict[str, str] = {}
        for status in await maintainer.status():
            assert status.index_name is not None, status
            names[status.table] = status.index_name
        scope = Scope("agent-1", MemoryFilters(), space)
        query_vector = np.ones(space.dimension, dtype=np.float32) / np.sqrt(space.dimension)
        statement = repository.combine(
            [
                repository.vector_memories(scope, query_vector, 20),
                repository.vector_chunks(scope, query_vector, 20),
            ]
        )
        plan = await explain(resources, statement)
        for name in (names["memory"], names["chunk"]):
            assert f"Index Scan using {name}" in plan, plan
        # The exact form of the same lists: no plan can serve its ORDER BY from the index,
        # even with sequential scans and sorts priced out.
        exact_plan = await explain(
            resources,
            repository.combine(
                [
                    repository.vector_memories(scope, query_vector, 20, exact=True),
                    repository.vector_chunks(scope, query_vector, 20, exact=True),
                ]
            ),
        )
        for name in (names["memory"], names["chunk"]):
            assert name not in exact_plan, exact_plan

    async def test_full_text_lists_use_the_gin_indexes(self, resources: Resources) -> None:
        scope = Scope("agent-1", MemoryFilters(), resources.space)
        statement = repository.combine(
            [
                repository.keyword_memories(scope, "ERR-4471-XQ", 20),
                repository.keyword_chunks(scope, "ERR-4471-XQ", 20),
            ]
        )
        # GIN serves bitmap scans only; on empty tables the btree indexes on the namespace
        # and the chunk's document cost as little, so they are taken out of the question.
        plan = await explain(
            resources,
            statement,
            "SET LOCAL enable_indexscan = off",
            "DROP INDEX memory_namespace_created_at_id_idx",
            "ALTER TABLE memory DROP CONSTRAINT memory_namespace_content_hash_key",
            "ALTER TABLE chunk DROP CONSTRAINT chunk_document_id_ordinal_key",
        )
        for name in ("memory_content_fts_idx", "chunk_text_fts_idx"):
            assert f"Bitmap Index Scan on {name}" in plan, plan

    async def test_full_text_lists_never_parse_the_stored_texts(self, resources: Resources) -> None:
        # Parsing each matching text again (to recheck `@@`, count the query terms, rank)
        # cost 300 ms of a 318 ms search over 701 chunks; the stored tsvectors of migration
        # 0016 are read instead. VERBOSE shows every expression the plan evaluates.
        scope = Scope("agent-1", MemoryFilters(), resources.space)
        statement = repository.combine(
            [
                repository.keyword_memories(scope, "copper bridge notes", 20, min_terms=2),
                repository.keyword_chunks(scope, "copper bridge notes", 20, min_terms=2),
            ]
        )
        plan = await explain(resources, statement, verbose=True)
        assert "content_tsv" in plan and "text_tsv" in plan, plan
        parsed = re.findall(r"to_tsvector\('english'::regconfig, \w+\.(?:content|text)\)", plan)
        assert not parsed, plan
