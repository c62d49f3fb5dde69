"""The ANN index lifecycle (`search/indexes.py`) on a real server: exact below the threshold,
built from real rows past it, rebuilt on growth or request, one builder at a time, writes
never waiting for a build, what a crashed build leaves dropped, and the state visible over
HTTP and the CLI. Recall at realistic size is `test_recall.py`'s."""

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from memory_service.app import Resources
from memory_service.core.errors import StartupError
from memory_service.core.tables import memory
from memory_service.search import index_repository
from memory_service.search.indexes import IndexMaintainer, IndexPolicy

MIN_ROWS = 500


@pytest.fixture
def maintainer(resources: Resources) -> IndexMaintainer:
    return IndexMaintainer(resources.engine, resources.space.id, IndexPolicy(MIN_ROWS, 2.0))


async def add_rows(resources: Resources, count: int, start: int = 0) -> None:
    """`count` embedded memories with random unit vectors, made in the database."""
    async with resources.engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO memory (namespace, content, content_hash, status, space_id,
                                    embedding, embedded_at)
                SELECT 'agent-1', 'row ' || g, sha256(('row ' || g)::bytea), 'embedded', :space,
                       (SELECT l2_normalize(array_agg(random() - 0.5)::vector)
                        FROM generate_series(1, :dim) WHERE g IS NOT NULL),
                       now()
                FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
                """
            ),
            {
                "space": resources.space.id,
                "dim": resources.space.dimension,
                "first": start,
                "last": start + count - 1,
            },
        )


async def lifecycle_indexes(engine: AsyncEngine, space_id: int) -> list[str]:
    async with engine.connect() as conn:
        return await index_repository.stray_indexes(conn, memory, space_id, None)


async def memory_status(maintainer: IndexMaintainer) -> dict[str, object]:
    (status,) = [s for s in await maintainer.status() if s.table == "memory"]
    return {
        "state": status.index_state,
        "name": status.index_name,
        "rows": status.rows,
        "rows_at_build": status.rows_at_build,
        "method": status.method,
    }


class TestLifecycle:
    async def test_below_min_rows_there_is_no_index(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        await add_rows(resources, MIN_ROWS - 1)
        assert await maintainer.maintain() == {"memory": "not_needed", "chunk": "not_needed"}
        status = await memory_status(maintainer)
        assert (status["state"], status["name"], status["rows"]) == ("exact", None, MIN_ROWS - 1)
        assert await lifecycle_indexes(resources.engine, resources.space.id) == []

    async def test_crossing_min_rows_builds_the_index_once(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        await add_rows(resources, MIN_ROWS)
        assert (await maintainer.maintain())["memory"] == "built"
        status = await memory_status(maintainer)
        name = f"memory_embedding_space_{resources.space.id}_g1_idx"
        assert status == {
            "state": "ready",
            "name": name,
            "rows": MIN_ROWS,
            "rows_at_build": MIN_ROWS,
            "method": "diskann",
        }
        assert await lifecycle_indexes(resources.engine, resources.space.id) == [name]
        assert (await maintainer.maintain())["memory"] == "not_needed"

    async def test_growth_rebuilds_and_drops_the_old_index(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        await add_rows(resources, MIN_ROWS)
        await maintainer.maintain()
        await add_rows(resources, MIN_ROWS - 1, start=MIN_ROWS)
        assert (await maintainer.maintain())["memory"] == "not_needed"
        await add_rows(resources, 1, start=2 * MIN_ROWS)
        assert (await maintainer.maintain())["memory"] == "rebuilt"
        status = await memory_status(maintainer)
        name = f"memory_embedding_space_{resources.space.id}_g2_idx"
        assert (status["name"], status["rows_at_build"]) == (name, 2 * MIN_ROWS)
        assert await lifecycle_indexes(resources.engine, resources.space.id) == [name]

    async def test_a_requested_rebuild_happens_at_the_next_pass(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        await add_rows(resources, MIN_ROWS)
        await maintainer.maintain()
        assert await maintainer.request_rebuild("memory") == 1
        assert (await maintainer.maintain())["memory"] == "rebuilt"
        assert (await maintainer.maintain())["memory"] == "not_needed"

    async def test_an_interrupted_build_leaves_nothing_behind(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        # What a builder killed mid-build leaves: an index of a later generation that no
        # `vector_index` row names (invalid after a failed CREATE INDEX CONCURRENTLY).
        leftover = f"memory_embedding_space_{resources.space.id}_g7_idx"
        async with resources.engine.begin() as conn:
            await conn.execute(text(f'CREATE INDEX "{leftover}" ON memory (space_id)'))
        assert await maintainer.maintain() == {"memory": "not_needed", "chunk": "not_needed"}
        assert await lifecycle_indexes(resources.engine, resources.space.id) == []


class TestMethod:
    async def test_the_configured_method_is_built_and_a_change_of_it_rebuilds(
        self, resources: Resources
    ) -> None:
        await add_rows(resources, MIN_ROWS)
        hnsw = IndexMaintainer(
            resources.engine, resources.space.id, IndexPolicy(MIN_ROWS, 2.0, "hnsw")
        )
        assert (await hnsw.maintain())["memory"] == "built"
        assert (await memory_status(hnsw))["method"] == "hnsw"
        assert (await hnsw.maintain())["memory"] == "not_needed"

        diskann = IndexMaintainer(
            resources.engine, resources.space.id, IndexPolicy(MIN_ROWS, 2.0, "diskann")
        )
        assert (await diskann.maintain())["memory"] == "rebuilt"
        status = await memory_status(diskann)
        assert (status["method"], status["state"]) == ("diskann", "ready")
        assert await lifecycle_indexes(resources.engine, resources.space.id) == [status["name"]]

    async def test_auto_is_hnsw_without_vectorscale_and_diskann_then_refuses(
        self, resources: Resources
    ) -> None:
        async with resources.engine.begin() as conn:
            assert await index_repository.resolve_method(conn, "auto") == "diskann"
            await conn.execute(text("DROP EXTENSION vectorscale"))
            assert await index_repository.resolve_method(conn, "auto") == "hnsw"
            assert await index_repository.resolve_method(conn, "hnsw") == "hnsw"
            with pytest.raises(StartupError, match="MEMORY_ANN_METHOD=hnsw"):
                await index_repository.resolve_method(conn, "diskann")


class TestConcurrentBuild:
    async def test_writes_go_on_and_a_second_builder_stands_aside_while_one_builds(
        self, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        await add_rows(resources, MIN_ROWS)
        # An open writing transaction: CREATE INDEX CONCURRENTLY waits for it to end before
        # it builds, which holds the build (and its locks) in place for as long as needed.
        async with resources.engine.connect() as blocker:
            await blocker.begin()
            await add_rows_in(blocker, resources, start=10 * MIN_ROWS)
            build = asyncio.create_task(maintainer.maintain_table("memory"))
            await until_building(resources.engine)
            assert (await memory_status(maintainer))["state"] == "building"
            other = IndexMaintainer(resources.engine, resources.space.id, maintainer.policy)
            assert await other.maintain_table("memory") == "busy"

            # A write to the table being indexed completes while the build holds its lock.
            async with asyncio.timeout(60):
                await add_rows(resources, 1, start=20 * MIN_ROWS)
            assert not build.done()
            assert (await memory_status(maintainer))["state"] == "building"
            await blocker.commit()
        assert await asyncio.wait_for(build, 120) == "built"
        assert (await memory_status(maintainer))["state"] == "ready"


class TestParallelBuild:
    async def test_a_build_large_enough_for_parallel_workers_succeeds(
        self, resources: Resources
    ) -> None:
        # pgvectorscale builds in parallel from `diskann.min_vectors_for_parallel_build`
        # (65,536) rows, as the table's statistics count them, once the table is large
        # enough for the planner to give it workers; inside CREATE INDEX CONCURRENTLY that
        # build fails. Both thresholds are lowered for the builder's sessions, and the table
        # analyzed, so that the build of this test gets workers.
        await add_rows(resources, 2 * MIN_ROWS)
        async with resources.engine.connect() as conn:
            await conn.execute(text("ANALYZE memory"))
            await conn.commit()
        engine = create_async_engine(
            resources.engine.url,
            connect_args={
                "options": "-c diskann.min_vectors_for_parallel_build=100 "
                "-c min_parallel_table_scan_size=8 -c max_parallel_maintenance_workers=2"
            },
        )
        try:
            async with engine.connect() as conn:
                workers = await conn.scalar(text("SHOW max_parallel_maintenance_workers"))
            assert workers == "2"
            maintainer = IndexMaintainer(engine, resources.space.id, IndexPolicy(MIN_ROWS, 2.0))
            assert await maintainer.maintain_table("memory") == "built"
            assert (await memory_status(maintainer))["state"] == "ready"
        finally:
            await engine.dispose()


async def add_rows_in(conn: AsyncConnection, resources: Resources, start: int) -> None:
    """One pending memory, inserted in `conn`'s open transaction."""
    await conn.execute(
        text(
            "INSERT INTO memory (namespace, content, content_hash, space_id) "
            "VALUES ('agent-1', :content, sha256(convert_to(:content, 'UTF8')), :space)"
        ),
        {"content": f"row {start}", "space": resources.space.id},
    )


async def until_building(engine: AsyncEngine) -> None:
    """Until a CREATE INDEX on `memory` is in progress (bounded: fails after 60 s)."""
    async with asyncio.timeout(60):
        while True:
            async with engine.connect() as conn:
                found = await conn.execute(
                    text(
                        "SELECT 1 FROM pg_stat_progress_create_index "
                        "WHERE relid = 'memory'::regclass"
                    )
                )
                if found.first() is not None:
                    return
            await asyncio.sleep(0.05)


class TestVisibility:
    async def test_spaces_endpoint_shows_each_table(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await add_rows(resources, 3)
        response = await client.get("/v1/spaces")
        assert response.status_code == 200, response.text
        (space,) = response.json()["spaces"]
        assert (space["name"], space["model"], space["dimension"]) == (
            resources.space.name,
            resources.space.model,
            resources.space.dimension,
        )
        tables = {table["table"]: table for table in space["tables"]}
        assert set(tables) == {"memory", "chunk"}
        assert (tables["memory"]["index_state"], tables["memory"]["rows"]) == ("exact", 3)
        assert tables["memory"]["recall"] == {}

    @pytest.mark.slow
    async def test_cli_status_and_rebuild(self, resources: Resources, database_url: str) -> None:
        await add_rows(resources, 5)
        env = {key: value for key, value in os.environ.items() if not key.startswith("MEMORY_")}
        env.update(MEMORY_DATABASE_URL=database_url, MEMORY_ANN_MIN_ROWS="5")
        command = [sys.executable, "-m", "memory_service.cli", "index"]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, *args], env=env, capture_output=True, text=True, timeout=300
            )

        status = await asyncio.to_thread(run, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = {row["table"]: row for row in json.loads(status.stdout)}
        assert (rows["memory"]["index_state"], rows["memory"]["rows"]) == ("exact", 5)

        rebuild = await asyncio.to_thread(run, "rebuild", "--table", "memory")
        assert rebuild.returncode == 0, rebuild.stderr
        assert rebuild.stdout.strip() == "memory: built"
        table = await asyncio.to_thread(run, "status")
        assert table.returncode == 0, table.stderr
        assert "memory  ready" in table.stdout
