"""A pending memory is embedded by one worker: the store that wrote it, or the reconciler,
never both; and neither holds a lock or a connection while its embedder works."""

import asyncio

import httpx
import numpy as np
from sqlalchemy import select

from memory_service.bootstrap import Resources
from memory_service.core.tables import memory
from tests.fakes import FlakyProvider
from tests.memories.factories import memory_body

# Bounds a wait that only a wedge would exhaust; nothing asserts on durations.
WEDGED_SECONDS = 60.0
CLIENTS = 16
STORES_PER_CLIENT = 25


async def _embedding_of(resources: Resources, memory_id: str) -> np.ndarray:
    async with resources.engine.connect() as conn:
        vector = await conn.scalar(select(memory.c.embedding).where(memory.c.id == memory_id))
    assert vector is not None
    return np.asarray(vector)


class TestOneEmbedder:
    async def test_the_reconciler_never_takes_a_row_a_store_is_embedding(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.hold = asyncio.Event()
        store = asyncio.create_task(
            client.post("/v1/memories", json=memory_body("The boat is moored at pier 4."))
        )
        await asyncio.wait_for(embedder.waiting.wait(), WEDGED_SECONDS)
        reconciling = asyncio.create_task(resources.reconciler.run_once())
        # A reconciler that took the row would wait on the held embedder: never done.
        await asyncio.wait([reconciling], timeout=WEDGED_SECONDS)
        assert embedder.calls == 1, "the reconciler embedded a row the store was embedding"
        assert reconciling.done() and reconciling.result().embedded == 0
        embedder.hold.set()
        response = await asyncio.wait_for(store, WEDGED_SECONDS)
        assert response.json()["status"] == "embedded"
        assert embedder.embedded["The boat is moored at pier 4."] == 1

    async def test_a_patch_does_not_wait_for_the_reconcilers_embedding(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        embedder.down = True
        stored = (await client.post("/v1/memories", json=memory_body("Old words."))).json()
        assert stored["status"] == "pending"
        embedder.down = False
        embedder.hold = asyncio.Event()
        reconciling = asyncio.create_task(resources.reconciler.run_once())
        await asyncio.wait_for(embedder.waiting.wait(), WEDGED_SECONDS)

        # The reconciler is inside its embedding call: it holds no row lock.
        patched = await asyncio.wait_for(
            client.patch(f"/v1/memories/{stored['id']}", json={"importance": 0.9}),
            WEDGED_SECONDS,
        )
        assert patched.status_code == 200
        assert patched.json()["importance"] == 0.9

        # A new content takes the row from the reconciler: its vector of the old words is
        # dropped, and the row ends with the vector of the new ones.
        embedder.waiting.clear()
        rewrite = asyncio.create_task(
            client.patch(f"/v1/memories/{stored['id']}", json={"content": "New words."})
        )
        await asyncio.wait_for(embedder.waiting.wait(), WEDGED_SECONDS)
        embedder.hold.set()
        report = await asyncio.wait_for(reconciling, WEDGED_SECONDS)
        rewritten = (await asyncio.wait_for(rewrite, WEDGED_SECONDS)).json()
        assert report.embedded == 0
        assert rewritten["status"] == "embedded"
        expected = (await resources.embedder.embed(["New words."])).vectors[0]
        assert np.allclose(await _embedding_of(resources, stored["id"]), expected, atol=1e-5)

    async def test_sixteen_writers_beside_a_busy_reconciler_embed_each_text_once(
        self, client: httpx.AsyncClient, embedder: FlakyProvider, resources: Resources
    ) -> None:
        stop = asyncio.Event()

        async def reconcile() -> int:
            passes = 0
            while not stop.is_set():
                await resources.reconciler.run_once()
                passes += 1
                await asyncio.sleep(0)
            return passes

        async def writer(number: int) -> list[tuple[str, str]]:
            answers = []
            for i in range(STORES_PER_CLIENT):
                body = memory_body(f"Writer {number} remembers fact {i}.")
                response = await client.post("/v1/memories", json=body)
                assert response.status_code == 201, response.text
                answers.append((response.json()["id"], response.json()["status"]))
            return answers

        reconciler = asyncio.create_task(reconcile())
        answers = [a for batch in await asyncio.gather(*map(writer, range(CLIENTS))) for a in batch]
        stop.set()
        passes = await asyncio.wait_for(reconciler, WEDGED_SECONDS)
        assert passes > 1, "the reconciler never ran beside the writers; it proved nothing"

        contents = [f"Writer {n} remembers fact {i}." for n in range(CLIENTS) for i in range(25)]
        twice = {text: n for text in contents if (n := embedder.embedded[text]) != 1}
        assert not twice, (
            f"{len(twice)} texts not embedded exactly once, e.g. {list(twice.items())[:3]}"
        )
        assert {status for _, status in answers} == {"embedded"}
        async with resources.engine.connect() as conn:
            rows = dict((await conn.execute(select(memory.c.id, memory.c.status))).all())
        assert {str(memory_id): status for memory_id, status in rows.items()} == dict(answers)
