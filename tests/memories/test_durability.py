"""Durable writes: a memory is kept when the embedder fails, and embedded once it is back."""

import asyncio
from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy import text

from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings
from memory_service.embeddings.port import ClientEmbedder
from memory_service.memories.reconciler import Reconciler
from memory_service.providers.embedding import EmbeddingClient, Vectors
from memory_service.providers.errors import ProviderInputError
from tests.fakes import FlakyProvider
from tests.memories.factories import memory_body


async def status_of(client: httpx.AsyncClient, memory_id: str) -> str:
    status: str = (await client.get(f"/v1/memories/{memory_id}")).json()["status"]
    return status


class TestPendingWrites:
    async def test_write_while_embedder_down_is_kept_pending_then_reconciled(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        response = await client.post(
            "/v1/memories", json=memory_body("The spare key is under the blue flowerpot.")
        )
        assert response.status_code == 201
        stored = response.json()
        assert stored["status"] == "pending"
        assert stored["embedded_at"] is None
        assert await status_of(client, stored["id"]) == "pending"

        embedder.down = False
        await client.post("/v1/memories", json=memory_body("The car is parked on level 3."))
        before = (
            await client.post(
                "/v1/memories/search",
                json={"namespace": "agent-1", "query": "where is the spare key?", "k": 10},
            )
        ).json()["results"]
        assert stored["id"] not in [hit["id"] for hit in before], "pending rows are never recalled"

        report = await resources.reconciler.run_once()
        assert report.embedded == 1
        after = (
            await client.post(
                "/v1/memories/search",
                json={"namespace": "agent-1", "query": "where is the spare key?", "k": 10},
            )
        ).json()["results"]
        assert after[0]["id"] == stored["id"]
        assert await status_of(client, stored["id"]) == "embedded"

    async def test_batch_while_embedder_down_is_all_pending(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        items = [memory_body(f"Pending fact number {i}.") for i in range(5)]
        response = await client.post("/v1/memories/batch", json={"items": items})
        assert response.status_code == 200
        assert {item["status"] for item in response.json()["items"]} == {"pending"}

        report = await resources.reconciler.run_once()
        assert report.embedder_down and report.embedded == 0
        embedder.down = False
        assert (await resources.reconciler.run_once()).embedded == 5

    async def test_content_patch_while_down_goes_pending(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        stored = (await client.post("/v1/memories", json=memory_body("Old text."))).json()
        embedder.down = True
        patched = (
            await client.patch(f"/v1/memories/{stored['id']}", json={"content": "New text."})
        ).json()
        assert patched["status"] == "pending"
        embedder.down = False
        assert (await resources.reconciler.run_once()).embedded == 1
        assert await status_of(client, stored["id"]) == "embedded"

    async def test_storing_a_pending_duplicate_embeds_it(
        self, client: httpx.AsyncClient, embedder: FlakyProvider
    ) -> None:
        embedder.down = True
        first = (await client.post("/v1/memories", json=memory_body("Retry me."))).json()
        embedder.down = False
        again = await client.post("/v1/memories", json=memory_body("Retry me."))
        assert again.status_code == 200
        assert again.json()["id"] == first["id"]
        assert again.json()["status"] == "embedded"

    async def test_reconciler_batches_and_leaves_nothing_pending(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        items = [memory_body(f"Backlog item {i}.") for i in range(150)]
        await client.post("/v1/memories/batch", json={"items": items})
        embedder.down = False
        reconciler = reconciler_of(resources, embedder, max_attempts=5)
        report = await reconciler.run_once()
        assert report.embedded == 150
        async with resources.engine.connect() as conn:
            pending = await conn.scalar(
                text("SELECT count(*) FROM memory WHERE status <> 'embedded'")
            )
        assert pending == 0


def reconciler_of(resources: Resources, embedder: EmbeddingClient, max_attempts: int) -> Reconciler:
    """The space's reconciler over the client `embedder`, in batches of 64."""
    return Reconciler(
        engine=resources.engine,
        embedder=ClientEmbedder(embedder, resources.space),
        space_id=resources.space.id,
        batch_size=64,
        max_attempts=max_attempts,
    )


class RejectingProvider(FlakyProvider):
    """Refuses a whole call when any text contains a marker, naming no index: what vLLM and
    Ollama do when one input of a batch is too long."""

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        if any("POISON" in text_ for text_ in texts):
            raise ProviderInputError(self.name, "input rejected")
        return await super()._embed_batch(texts)


class TestFailedRows:
    async def test_a_rejected_row_fails_after_max_attempts_without_blocking_others(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        await client.post(
            "/v1/memories/batch",
            json={"items": [memory_body("POISON row."), memory_body("Healthy row.")]},
        )
        rejecting = RejectingProvider(embedder.inner)
        reconciler = reconciler_of(resources, rejecting, max_attempts=2)
        await reconciler.run_once()
        await reconciler.run_once()
        await reconciler.run_once()
        async with resources.engine.connect() as conn:
            result = await conn.execute(text("SELECT content, status FROM memory"))
            rows = {content: status for content, status in result}
            error = await conn.scalar(
                text("SELECT last_error FROM memory WHERE content = 'POISON row.'")
            )
        assert rows == {"POISON row.": "failed", "Healthy row.": "embedded"}
        assert error is not None and "input rejected" in error

    async def test_one_refused_row_in_a_full_batch_costs_the_others_nothing(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        items = [memory_body(f"Backlog {i}.") for i in range(63)]
        items.insert(17, memory_body("POISON in the middle."))
        await client.post("/v1/memories/batch", json={"items": items})
        rejecting = RejectingProvider(embedder.inner)
        rejecting.max_batch = 64
        reconciler = reconciler_of(resources, rejecting, max_attempts=3)
        report = await reconciler.run_once()
        assert report.embedded == 63
        assert report.failed_attempts == 1, "only the refused row is charged, once per pass"
        async with resources.engine.connect() as conn:
            result = await conn.execute(
                text("SELECT status, count(*) FROM memory GROUP BY status ORDER BY status")
            )
            counts = {status: count for status, count in result}
        assert counts == {"embedded": 63, "pending": 1}


class TestReconcilerInTheApp:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"reconciler": True, "reconcile_interval_seconds": 0.05})

    async def test_lifespan_reconciler_embeds_pending_rows(
        self, client: httpx.AsyncClient, embedder: FlakyProvider
    ) -> None:
        embedder.down = True
        stored = (await client.post("/v1/memories", json=memory_body("Background me."))).json()
        assert stored["status"] == "pending"
        embedder.down = False
        for _ in range(400):  # bounded wait for the background task, not a timing assertion
            if await status_of(client, stored["id"]) == "embedded":
                break
            await asyncio.sleep(0.05)
        assert await status_of(client, stored["id"]) == "embedded"
