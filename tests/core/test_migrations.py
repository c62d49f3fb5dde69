"""Alembic migrations on a real server: round trip, agreement with tables.py, head check."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core import migrations
from memory_service.core.db import create_engine, current_revision, ensure_schema_at_head
from memory_service.core.errors import StartupError
from memory_service.core.tables import metadata


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        return set(result.scalars())


async def extensions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT extname FROM pg_extension"))).scalars())


class TestMigrations:
    async def test_upgrade_downgrade_upgrade(self, empty_database_url: str) -> None:
        engine = create_engine(empty_database_url, pool_size=1)
        try:
            assert await current_revision(engine) is None
            await _in_thread(migrations.upgrade, empty_database_url)
            assert await current_revision(engine) == migrations.head_revision()
            assert {"memory", "embedding_space", "alembic_version"} <= await table_names(engine)
            assert {"vector", "vectorscale"} <= await extensions(engine)

            await _in_thread(migrations.downgrade, empty_database_url, "base")
            assert await current_revision(engine) is None
            assert await table_names(engine) == {"alembic_version"}

            await _in_thread(migrations.upgrade, empty_database_url)
            assert await current_revision(engine) == migrations.head_revision()
        finally:
            await engine.dispose()

    async def test_an_upgrade_that_failed_building_an_index_concurrently_is_retried(
        self, empty_database_url: str
    ) -> None:
        # A failed CREATE INDEX CONCURRENTLY leaves an INVALID index, and its revision
        # unrecorded. Here 0008 failed at its second index (the first was built, the third
        # never), 0009 at its first tail index, and later 0014 at its only index.
        engine = create_engine(empty_database_url, pool_size=1)
        try:
            await _in_thread(migrations.upgrade, empty_database_url, "0008")
            await _break(
                engine,
                "UPDATE alembic_version SET version_num = '0007'",
                _INVALIDATE.format(name="memory_namespace_agent_id_idx"),
                "DROP INDEX memory_namespace_session_id_idx",
            )
            await _in_thread(migrations.upgrade, empty_database_url, "0009")
            await _break(
                engine,
                "UPDATE alembic_version SET version_num = '0008'",
                "DROP INDEX chunk_tail_idx",
                _INVALIDATE.format(name="memory_tail_idx"),
            )
            await _in_thread(migrations.upgrade, empty_database_url, "0013")
            await _break(
                engine,
                "CREATE INDEX memory_failed_idx ON memory (space_id) WHERE status = 'failed'",
                _INVALIDATE.format(name="memory_failed_idx"),
            )
            await _in_thread(migrations.upgrade, empty_database_url)
            assert await current_revision(engine) == migrations.head_revision()
            async with engine.connect() as conn:
                invalid = await conn.execute(
                    text("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
                )
                names = await conn.execute(text("SELECT indexname FROM pg_indexes"))
                assert list(invalid.scalars()) == []
                assert {
                    "memory_namespace_user_id_idx",
                    "memory_namespace_agent_id_idx",
                    "memory_namespace_session_id_idx",
                    "memory_tail_idx",
                    "chunk_tail_idx",
                    "memory_failed_idx",
                } <= set(names.scalars())
        finally:
            await engine.dispose()

    async def test_tables_module_matches_the_migrated_schema(self, database_url: str) -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                diff = await conn.run_sync(_compare)
        finally:
            await engine.dispose()
        assert diff == []

    async def test_a_schema_behind_head_is_refused_with_the_fix(
        self, empty_database_url: str
    ) -> None:
        engine = create_engine(empty_database_url, pool_size=1)
        try:
            with pytest.raises(StartupError, match="memory-service db upgrade"):
                await ensure_schema_at_head(engine)
        finally:
            await engine.dispose()


_INVALIDATE = "UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}'::regclass"


async def _break(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


def _compare(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _in_thread(function: object, *args: str) -> None:
    """Alembic runs its own event loop (env.py), so it must not run on the test's loop."""
    import asyncio

    assert callable(function)
    await asyncio.to_thread(function, *args)
