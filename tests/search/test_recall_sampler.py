"""The recall sampler (`search/recall.py`) on a real server: it re-runs searches exactly,
catches an index that answers badly (one built on an empty table, as the service once did),
asks for its rebuild, and shows what it measured in `GET /v1/spaces`."""

import logging

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from memory_service.memories.schemas import MemoryFilters
from memory_service.providers.embedding import Vectors
from memory_service.search import index_repository, repository
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from memory_service.search.recall import MIN_SAMPLES, RecallSampler, Sample, selectivity_class
from memory_service.search.repository import Scope
from memory_service.search.searcher import VectorSettings
from tests.search.test_indexes import add_rows

SCOPE_NAMESPACE = "agent-1"


def unit_vectors(count: int, dimension: int, seed: int) -> Vectors:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    normalized: Vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalized


async def index_search(resources: Resources, vector: Vectors) -> list[str]:
    """What a search through the space's index returns (the service's statement)."""
    scope = Scope(SCOPE_NAMESPACE, MemoryFilters(), resources.space)
    async with resources.engine.begin() as conn:
        await VectorSettings().apply(conn)
        rows = await repository.search(conn, repository.vector_memories(scope, vector, 10))
    return [row.id for row in rows]


def sampler_for(resources: Resources) -> RecallSampler:
    return RecallSampler(
        engine=resources.engine,
        space_id=resources.space.id,
        rate=1.0,
        max_per_minute=6_000,
        target=0.95,
    )


class TestSelectivityClass:
    @pytest.mark.parametrize(
        ("scope_rows", "space_rows", "expected"),
        [
            (100, 100, "100%"),
            (50, 100, "100%"),
            (10, 100, "10%"),
            (1, 100, "1%"),
            (1, 1000, "0.1%"),
        ],
    )
    def test_classes(self, scope_rows: int, space_rows: int, expected: str) -> None:
        assert selectivity_class(scope_rows, space_rows) == expected


class TestRecallSampler:
    async def test_an_index_built_on_an_empty_table_is_caught_and_rebuilt(
        self, resources: Resources, caplog: pytest.LogCaptureFixture
    ) -> None:
        space = resources.space
        maintainer = IndexMaintainer(
            engine=resources.engine, space_id=space.id, policy=IndexPolicy(0, 2.0)
        )
        # The old defect on purpose: the index trained on no rows, the rows inserted after.
        assert (await maintainer.maintain())["memory"] == "built"
        await add_rows(resources, 3_000)
        async with resources.engine.begin() as conn:
            # What autovacuum does after such a load; the planner then takes the index.
            await conn.execute(text("ANALYZE memory"))
        sampler = sampler_for(resources)
        scope = Scope(SCOPE_NAMESPACE, MemoryFilters(), space)
        queries = unit_vectors(MIN_SAMPLES, space.dimension, seed=3)
        with caplog.at_level(logging.WARNING, logger="memory_service.search.recall"):
            measured = [
                await sampler.measure(
                    Sample("memory", scope, query, 10, tuple(await index_search(resources, query)))
                )
                for query in queries
            ]
        bad = float(np.mean([value for value in measured if value is not None]))
        assert len(measured) == MIN_SAMPLES and bad < 0.5, measured
        assert "below the target" in caplog.text
        async with resources.engine.connect() as conn:
            row = await index_repository.index_row(conn, space.id, "memory")
        assert row is not None and row.rebuild_requested_at is not None
        assert row.recall["100%"]["samples"] == MIN_SAMPLES
        assert row.recall["100%"]["recall"] == pytest.approx(bad, abs=1e-3)

        # Rebuilt on the rows that exist, the same searches measured again recover. (Uniform
        # random vectors in 384 dimensions are the hardest case for any ANN index: the
        # real-text recall target is test_recall.py's; here the contrast is the point.)
        assert (await maintainer.maintain())["memory"] == "rebuilt"
        rebuilt = [
            await sampler.measure(
                Sample("memory", scope, query, 10, tuple(await index_search(resources, query)))
            )
            for query in queries
        ]
        good = float(np.mean([value for value in rebuilt if value is not None]))
        assert good - bad > 0.5, (good, bad)

    async def test_a_table_without_an_index_is_not_measured(self, resources: Resources) -> None:
        await add_rows(resources, 10)
        scope = Scope(SCOPE_NAMESPACE, MemoryFilters(), resources.space)
        query = unit_vectors(1, resources.space.dimension, seed=5)[0]
        sample = Sample("memory", scope, query, 10, ())
        assert await sampler_for(resources).measure(sample) is None


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Every search sampled, and none small enough to be searched exactly (which is not).
    return settings.model_copy(update={"recall_sample_rate": 1.0, "ann_exact_scope_rows": 0})


class TestSampledSearches:
    async def test_a_live_search_is_sampled_measured_and_shown(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        await add_rows(resources, 600)
        maintainer = IndexMaintainer(
            engine=resources.engine, space_id=resources.space.id, policy=IndexPolicy(500, 2.0)
        )
        assert (await maintainer.maintain())["memory"] == "built"
        response = await client.post(
            "/v1/memories/search", json={"namespace": SCOPE_NAMESPACE, "query": "row", "k": 5}
        )
        assert response.status_code == 200, response.text
        sample = resources.sampler.queue.get_nowait()
        assert (sample.table, sample.k) == ("memory", 5)
        assert list(sample.found) == [hit["id"] for hit in response.json()["results"]]
        value = await resources.sampler.measure(sample)
        assert value is not None
        spaces = (await client.get("/v1/spaces")).json()["spaces"]
        memory_table = next(t for t in spaces[0]["tables"] if t["table"] == "memory")
        assert memory_table["recall"]["100%"]["samples"] == 1
        assert memory_table["recall"]["100%"]["recall"] == pytest.approx(value, abs=1e-3)

    async def test_searches_of_every_source_are_offered(
        self, client: httpx.AsyncClient, resources: Resources
    ) -> None:
        response = await client.post(
            "/v1/search", json={"namespace": SCOPE_NAMESPACE, "query": "row", "mode": "hybrid"}
        )
        assert response.status_code == 200, response.text
        tables = sorted(
            resources.sampler.queue.get_nowait().table
            for _ in range(resources.sampler.queue.qsize())
        )
        assert tables == ["chunk", "memory"]
        keyword = await client.post(
            "/v1/search", json={"namespace": SCOPE_NAMESPACE, "query": "row", "mode": "keyword"}
        )
        assert keyword.status_code == 200
        assert resources.sampler.queue.empty()
