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
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from memory_service.bootstrap import Resources
from memory_service.core.errors import StartupError
from memory_service.core.tables import memory
from memory_service.memories.reconciler import Reconciler
from memory_service.memories.repository import Claim, PendingText, store_vectors
from memory_service.memories.schemas import MemoryFilters
from memory_service.search import index_repository
from memory_service.search import repository as search_repository
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from memory_service.search.repository import Scope
from tests.fakes import FlakyProvider

MIN_ROWS = 500


@pytest.fixture
def maintainer(resources: Resources) -> IndexMaintainer:
    return IndexMaintainer(
        engine=resources.engine, space_id=resources.space.id, policy=IndexPolicy(MIN_ROWS, 2.0)
    )


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
            engine=resources.engine,
            space_id=resources.space.id,
            policy=IndexPolicy(MIN_ROWS, 2.0, "hnsw"),
        )
        assert (await hnsw.maintain())["memory"] == "built"
        assert (await memory_status(hnsw))["method"] == "hnsw"
        assert (await hnsw.maintain())["memory"] == "not_needed"

        diskann = IndexMaintainer(
            engine=resources.engine,
            space_id=resources.space.id,
            policy=IndexPolicy(MIN_ROWS, 2.0, "diskann"),
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
            await until_phase(resources.engine)
            assert (await memory_status(maintainer))["state"] == "building"
            other = IndexMaintainer(
                engine=resources.engine, space_id=resources.space.id, policy=maintainer.policy
            )
            assert await other.maintain_table("memory") == "busy"

            # A write to the table being indexed completes while the build holds its lock.
            async with asyncio.timeout(60):
                await add_rows(resources, 1, start=20 * MIN_ROWS)
            assert not build.done()
            assert (await memory_status(maintainer))["state"] == "building"
            await blocker.commit()
        assert await asyncio.wait_for(build, 120) == "built"
        assert (await memory_status(maintainer))["state"] == "ready"


class TestWritesDuringBuild:
    async def test_no_write_reaches_an_index_while_it_is_built(
        self, client: httpx.AsyncClient, resources: Resources, maintainer: IndexMaintainer
    ) -> None:
        # pgvectorscale 0.9 takes a transaction-level advisory lock keyed by the index's oid
        # in every insert into a diskann index (`acquire_index_lock`), and the validation
        # phase of CREATE INDEX CONCURRENTLY inserts every row written during the build in
        # one transaction: at 100k rows it held that lock for 43 s while writes queued on
        # it. Here the test holds that same lock for the whole build, standing in for a
        # long validation, and holds the build in each phase in turn with a transaction the
        # build must wait for, so that each write below runs in the phase it names. The
        # build must get through validation, and every write complete, without the lock:
        # nothing written during the build enters the new index.
        await add_rows(resources, MIN_ROWS)
        during_build = await store(client, "a memory embedded while the index is built")
        kept = await store(client, "a memory whose metadata changes in the last phase")
        async with (
            resources.engine.connect() as insert_lock,
            resources.engine.connect() as old_snapshot,
            resources.engine.connect() as first_writer,
            resources.engine.connect() as second_writer,
        ):
            await old_snapshot.execution_options(isolation_level="REPEATABLE READ")
            await old_snapshot.begin()
            await old_snapshot.execute(text("SELECT count(*) FROM memory"))
            await first_writer.begin()
            await add_rows_in(first_writer, resources, start=10 * MIN_ROWS)
            build = asyncio.create_task(maintainer.maintain_table("memory"))
            new_index = await until_phase(resources.engine, "waiting for writers before build")
            await insert_lock.execute(select(func.pg_advisory_lock(new_index)))
            await insert_lock.commit()

            # A vector written while the build reads the table, which the build cannot hold.
            await second_writer.begin()
            await store_vector_in(second_writer, resources, during_build)
            await first_writer.commit()
            await until_phase(resources.engine, "waiting for writers before validation")
            await second_writer.commit()
            # Validation done without the insert lock; the build waits for `old_snapshot`.
            await until_phase(resources.engine, "waiting for old snapshots")

            async with asyncio.timeout(60):
                stored = await store(client, "a memory stored in the last phase of the build")
                patched = await client.patch(
                    f"/v1/memories/{kept}", json={"metadata": {"changed": True}}
                )
            assert patched.status_code == 200, patched.text
            assert not build.done()
            assert (await memory_status(maintainer))["state"] == "building"
            assert await tail(resources) == {during_build, kept, stored}
            # Searched exactly meanwhile: each is its own nearest neighbour.
            for memory_id in (during_build, kept, stored):
                assert await nearest_by_index_plan(resources, memory_id) == memory_id
            await insert_lock.execute(select(func.pg_advisory_unlock(new_index)))
            await insert_lock.commit()
            await old_snapshot.commit()

        assert await asyncio.wait_for(build, 120) == "built"
        # The pass moved the tail into the new index, which now serves them.
        assert await tail(resources) == set()
        (status,) = [s for s in await maintainer.status() if s.table == "memory"]
        assert (status.index_state, status.tail_rows) == ("ready", 0)
        async with resources.engine.begin() as conn:
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            await conn.execute(text("SET LOCAL enable_sort = off"))
            for memory_id in (during_build, kept, stored):
                assert await nearest_by_index_plan(resources, memory_id, conn) == memory_id


class TestGate:
    async def test_every_write_path_keeps_its_rows_out_of_the_index_while_the_gate_is_closed(
        self,
        client: httpx.AsyncClient,
        resources: Resources,
        embedder: FlakyProvider,
        maintainer: IndexMaintainer,
    ) -> None:
        merged = await store(client, "a memory stored again while the gate is closed")
        patched = await store(client, "a memory patched while the gate is closed")
        async with resources.engine.connect() as gate:
            await index_repository.ensure_rows(gate, resources.space.id)
            rows = await index_repository.index_rows(gate, resources.space.id)
            assert {row.table_name for row in rows} == {"memory", "chunk"}
            for row in rows:
                await index_repository.take_gate(gate, row.id)
            await gate.commit()

            inline = await store(client, "a memory embedded inline while the gate is closed")
            again = await client.post(
                "/v1/memories",
                json={
                    "namespace": "agent-1",
                    "content": "a memory stored again while the gate is closed",
                    "metadata": {"again": True},
                },
            )
            assert again.json()["id"] == merged, again.text
            response = await client.patch(f"/v1/memories/{patched}", json={"tags": ["x"]})
            assert response.status_code == 200, response.text
            embedder.down = True
            deferred = await client.post(
                "/v1/memories", json={"namespace": "agent-1", "content": "embedded later"}
            )
            assert deferred.json()["status"] == "pending", deferred.text
            embedder.down = False
            report = await Reconciler(
                engine=resources.engine,
                embedder=resources.batch_embedder,
                space_id=resources.space.id,
                batch_size=8,
                max_attempts=3,
            ).run_once()
            assert report.embedded == 1
            document = await client.post(
                "/v1/documents",
                json={
                    "namespace": "agent-1",
                    "text": " ".join(f"Sentence {n} of the document." for n in range(60)),
                },
            )
            assert document.status_code == 201, document.text

            expected = {inline, merged, patched, str(deferred.json()["id"])}
            assert await tail(resources) == expected
            async with resources.engine.connect() as conn:
                chunks_out = await conn.scalar(
                    text("SELECT count(*) FROM chunk WHERE NOT in_index")
                )
            assert chunks_out == document.json()["chunks"]
            # The vector list a search runs when it plans the index reads the tail too.
            async with resources.engine.connect() as conn:
                chunk_id, vector = (
                    await conn.execute(text("SELECT id, embedding FROM chunk LIMIT 1"))
                ).one()
                scope = Scope("agent-1", MemoryFilters(), resources.space)
                nearest = await search_repository.search(
                    conn, search_repository.vector_chunks(scope, vector, 1, exact=False)
                )
            assert [row.id for row in nearest] == [str(chunk_id)]
            # The drain leaves them while the gate is closed ...
            assert await maintainer.drain("memory") == 0
            for row in rows:
                await index_repository.release_gate(gate, row.id)
            await gate.commit()
        # ... and moves them in once it is open.
        assert await maintainer.drain("memory") == len(expected)
        assert await maintainer.drain("chunk") == chunks_out
        assert await tail(resources) == set()
        after = await store(client, "a memory stored with the gate open")
        async with resources.engine.connect() as conn:
            assert await conn.scalar(select(memory.c.in_index).where(memory.c.id == after))

    async def test_a_build_in_another_database_of_the_server_is_not_this_ones(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        # Advisory lock keys repeat across databases (every database numbers its
        # `vector_index` rows from 1), and pg_locks lists the whole server's locks.
        async with resources.engine.begin() as conn:
            await index_repository.ensure_rows(conn, resources.space.id)
            row = await index_repository.index_row(conn, resources.space.id, "memory")
        assert row is not None
        other = create_async_engine(resources.engine.url.set(database="postgres"))
        try:
            async with other.connect() as elsewhere:
                assert await index_repository.try_build_lock(elsewhere, row.id)
                await index_repository.take_gate(elsewhere, row.id)
                stored = await store(client, "a memory stored while another database builds")
                async with resources.engine.connect() as conn:
                    in_index = await conn.scalar(
                        select(memory.c.in_index).where(memory.c.id == stored)
                    )
                    running = await index_repository.builds_running(conn, [row.id])
                assert in_index is True
                assert running == set()
                await index_repository.release_gate(elsewhere, row.id)
                await index_repository.release_build_lock(elsewhere, row.id)
        finally:
            await other.dispose()


async def store(client: httpx.AsyncClient, content: str) -> str:
    """Store through the HTTP write path (the row, then its vector inline); its id."""
    response = await client.post("/v1/memories", json={"namespace": "agent-1", "content": content})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "embedded", response.text
    return str(response.json()["id"])


async def store_vector_in(conn: AsyncConnection, resources: Resources, memory_id: str) -> None:
    """The memory's vector written again by the service's vector write, in `conn`'s open
    transaction: the row made pending (as a PATCH of its content does), then embedded."""
    claim = Claim(60)
    row = (
        await conn.execute(
            text(
                "UPDATE memory SET status = 'pending', embedding = NULL, "
                "embed_claim = :claim WHERE id = :id RETURNING id, content, content_hash"
            ),
            {"id": memory_id, "claim": claim.token},
        )
    ).one()
    embedding = await resources.embedder.embed([row.content])
    item = PendingText(row.id, row.content, row.content_hash)
    assert await store_vectors(conn, resources.space.id, [item], embedding.vectors, claim)


async def tail(resources: Resources) -> set[str]:
    async with resources.engine.connect() as conn:
        result = await conn.execute(
            select(memory.c.id).where(~memory.c.in_index, memory.c.embedding.is_not(None))
        )
        return {str(memory_id) for memory_id in result.scalars()}


async def nearest_by_index_plan(
    resources: Resources, memory_id: str, conn: AsyncConnection | None = None
) -> str:
    """The nearest memory to `memory_id`'s own vector, by the vector list a search runs when
    it plans the index (index and tail merged)."""
    if conn is None:
        async with resources.engine.begin() as own:
            return await nearest_by_index_plan(resources, memory_id, own)
    vector = (
        await conn.execute(select(memory.c.embedding).where(memory.c.id == memory_id))
    ).scalar_one()
    scope = Scope("agent-1", MemoryFilters(), resources.space)
    rows = await search_repository.search(
        conn, search_repository.vector_memories(scope, vector, 1, exact=False)
    )
    return rows[0].id


async def until_phase(engine: AsyncEngine, phase: str | None = None) -> int:
    """Until a CREATE INDEX on `memory` is in progress, in `phase` if given (bounded: fails
    after 60 s); the oid of the index it builds."""
    async with asyncio.timeout(60):
        while True:
            async with engine.connect() as conn:
                found = await conn.execute(
                    text(
                        "SELECT index_relid::bigint FROM pg_stat_progress_create_index "
                        "WHERE relid = 'memory'::regclass "
                        "AND (CAST(:phase AS text) IS NULL OR phase = :phase)"
                    ),
                    {"phase": phase},
                )
                index_oid = found.scalar()
                if index_oid is not None:
                    return int(index_oid)
            await asyncio.sleep(0.05)


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
            maintainer = IndexMaintainer(
                engine=engine, space_id=resources.space.id, policy=IndexPolicy(MIN_ROWS, 2.0)
            )
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
