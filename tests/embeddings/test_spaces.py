"""Embedding-space identity: recorded once, refused when the embedder changes."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.bootstrap import open_resources
from memory_service.core.db import create_engine
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.embeddings.spaces import register_space
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from tests.fakes import FlakyProvider


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def index_definitions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT indexdef || ' opclass=' || opcname FROM pg_indexes "
                "JOIN pg_index ON indexrelid = to_regclass(indexname) "
                "JOIN pg_opclass ON pg_opclass.oid = pg_index.indclass[0] "
                r"WHERE indexname LIKE 'memory\_embedding\_space\_%'"
            )
        )
        return list(result.scalars())


async def embedding_type(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        column_type: str = (
            await conn.execute(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'memory'::regclass AND attname = 'embedding'"
                )
            )
        ).scalar_one()
        return column_type


class TestRegisterSpace:
    async def test_first_registration_types_the_column_and_builds_no_index(
        self, engine: AsyncEngine
    ) -> None:
        assert await embedding_type(engine) == "vector"
        space = await register_space(engine, "default", "model-a", 384, True)
        assert await embedding_type(engine) == "vector(384)"
        # An index built on the empty table would never learn its quantizer: the index
        # lifecycle builds it from real rows (tests/search/test_indexes.py).
        assert await index_definitions(engine) == []
        again = await register_space(engine, "default", "model-a", 384, True)
        assert again == space

    async def test_a_changed_model_is_refused(self, engine: AsyncEngine) -> None:
        await register_space(engine, "default", "model-a", 384, True)
        with pytest.raises(
            StartupError, match=r"model-a \(384-dim, normalized\).*model-b \(384-dim, normalized\)"
        ):
            await register_space(engine, "default", "model-b", 384, True)

    async def test_a_changed_dimension_is_refused(self, engine: AsyncEngine) -> None:
        await register_space(engine, "default", "model-a", 384, True)
        with pytest.raises(StartupError, match="1024-dim"):
            await register_space(engine, "default", "model-a", 1024, True)

    async def test_a_second_space_of_another_dimension_is_refused(
        self, engine: AsyncEngine
    ) -> None:
        await register_space(engine, "default", "model-a", 384, True)
        with pytest.raises(StartupError, match="One database holds one dimension"):
            await register_space(engine, "big", "model-c", 1024, True)
        async with engine.connect() as conn:
            names = (await conn.execute(text("SELECT name FROM embedding_space"))).scalars()
            assert list(names) == ["default"]

    async def test_a_second_space_of_the_same_dimension_gets_its_own_index(
        self, engine: AsyncEngine
    ) -> None:
        first = await register_space(engine, "default", "model-a", 384, True)
        second = await register_space(engine, "other", "model-b", 384, True)
        assert first.id != second.id
        for space in (first, second):
            # min_rows 0: built on the empty tables, only to look at the definitions.
            await IndexMaintainer(
                engine=engine, space_id=space.id, policy=IndexPolicy(0, 2.0)
            ).maintain()
        definitions = await index_definitions(engine)
        assert len(definitions) == 2
        for space in (first, second):
            (definition,) = [d for d in definitions if f"(space_id = {space.id})" in d]
            assert "USING diskann (embedding)" in definition
            assert definition.endswith("opclass=vector_cosine_ops")


class TestStartWithChangedEmbedder:
    async def test_open_resources_refuses_a_different_model(
        self, settings: Settings, embedder: FlakyProvider
    ) -> None:
        async with open_resources(settings, embedder=embedder) as resources:
            assert resources.space.model == "all-MiniLM-L6-v2"
        embedder.model_id = "mxbai-embed-large"
        with pytest.raises(StartupError, match="must never be mixed"):
            async with open_resources(settings, embedder=embedder):
                pass
