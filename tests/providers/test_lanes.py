"""Lanes (`providers/lanes.py`): the priority worker, and the in-process model, on which
interactive calls never wait for bulk ones."""

import asyncio
import threading
from concurrent.futures import Future

import numpy as np

from memory_service.providers.lanes import Lane, PriorityWorker, bulk_lane, current_lane
from memory_service.providers.local import LocalProvider

WEDGED_SECONDS = 60.0


class TestPriorityWorker:
    async def test_queued_interactive_calls_run_before_queued_bulk_ones(self) -> None:
        worker = PriorityWorker("test-lanes")
        gate = threading.Event()
        ran: list[str] = []
        try:
            blocker = worker.run(gate.wait, Lane.BULK)
            calls = [
                worker.run(lambda name=name: ran.append(name), lane)  # type: ignore[misc]
                for name, lane in [
                    ("bulk 1", Lane.BULK),
                    ("bulk 2", Lane.BULK),
                    ("query", Lane.INTERACTIVE),
                    ("store", Lane.INTERACTIVE),
                ]
            ]
            tasks = [asyncio.ensure_future(c) for c in [blocker, *calls]]
            await asyncio.sleep(0)
            gate.set()
            await asyncio.wait_for(asyncio.gather(*tasks), WEDGED_SECONDS)
        finally:
            gate.set()
            worker.shutdown()
        assert ran == ["query", "store", "bulk 1", "bulk 2"]

    async def test_a_call_whose_caller_left_is_never_run(self) -> None:
        worker = PriorityWorker("test-lanes")
        gate = threading.Event()
        ran: list[str] = []
        try:
            blocker = asyncio.ensure_future(worker.run(gate.wait))
            gone = asyncio.ensure_future(worker.run(lambda: ran.append("gone")))
            kept = asyncio.ensure_future(worker.run(lambda: ran.append("kept")))
            await asyncio.sleep(0)
            gone.cancel()
            await asyncio.wait([gone])  # its queued call was cancelled on the way
            gate.set()
            await asyncio.wait_for(asyncio.gather(blocker, kept), WEDGED_SECONDS)
        finally:
            gate.set()
            worker.shutdown()
        assert ran == ["kept"]

    async def test_the_lane_is_the_callers_and_ends_with_the_block(self) -> None:
        assert current_lane() is Lane.INTERACTIVE
        with bulk_lane():
            assert current_lane() is Lane.BULK
            assert await asyncio.create_task(_lane_of_a_new_task()) is Lane.BULK
        assert current_lane() is Lane.INTERACTIVE


async def _lane_of_a_new_task() -> Lane:
    return current_lane()


class TestLocalModel:
    async def test_a_query_passes_a_bulk_embedding_in_progress(
        self, local_provider: LocalProvider
    ) -> None:
        # About 13,000 characters: several slices (SLICE_CHARS) of bulk work.
        texts = [f"Bulk chunk number {i} about harbors and granite. " * 4 for i in range(64)]

        async def bulk() -> np.ndarray:
            with bulk_lane():
                return (await local_provider.embed(texts)).copy()

        bulk_task = asyncio.create_task(bulk())
        await asyncio.sleep(0)  # the bulk embedding has queued its first slice
        query = await asyncio.wait_for(local_provider.embed(["where is the key"]), WEDGED_SECONDS)
        assert not bulk_task.done(), "the query waited for the whole bulk embedding"
        sliced = await asyncio.wait_for(bulk_task, WEDGED_SECONDS)
        assert query.shape == (1, local_provider.dimension)
        whole = await local_provider._worker.run(  # one call, not sliced
            lambda: local_provider._model.encode(
                texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False
            )
        )
        assert np.allclose(sliced, whole, atol=1e-5), "slices came back out of order"

    async def test_a_query_is_encoded_while_the_bulk_thread_is_busy(
        self, local_provider: LocalProvider
    ) -> None:
        # The bulk thread is held (as by one long slice of ingestion); the query has a
        # thread and a replica of the model of its own, so it never waits for it.
        gate, held = hold(local_provider._worker)
        try:
            query = await asyncio.wait_for(
                local_provider.embed(["where is the key"]), WEDGED_SECONDS
            )
            count = await asyncio.wait_for(
                local_provider.count_tokens(["where is the key"]), WEDGED_SECONDS
            )
        finally:
            gate.set()
            await asyncio.wrap_future(held)
        with bulk_lane():
            by_bulk_thread = await local_provider.embed(["where is the key"])
        assert np.allclose(query, by_bulk_thread, atol=1e-6), "the replica encodes differently"
        assert count == [6]  # [CLS] where is the key [SEP]

    async def test_a_store_is_counted_while_a_document_is_chunked(
        self, local_provider: LocalProvider
    ) -> None:
        # The text thread is held (as by chunking a large document): a store's token count
        # is taken on the interactive thread.
        gate, held = hold(local_provider._text_worker)
        try:
            count = await asyncio.wait_for(
                local_provider.count_tokens(["a memory to store"]), WEDGED_SECONDS
            )
        finally:
            gate.set()
            await asyncio.wrap_future(held)
        assert count == [6]


def hold(worker: PriorityWorker) -> tuple[threading.Event, "Future[object]"]:
    """Keep `worker`'s thread busy until the returned event is set; returns once the call
    that holds it is running (queued, an interactive call would simply go first)."""
    gate, running = threading.Event(), threading.Event()

    def held() -> object:
        running.set()
        return gate.wait()

    future = worker.submit(held, Lane.BULK)
    assert running.wait(WEDGED_SECONDS), "the worker never started the holding call"
    return gate, future
