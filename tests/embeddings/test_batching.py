"""Request coalescing over the real model: many concurrent calls, one provider call."""

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.embeddings.port import ClientEmbedder, Embedding
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import EmbeddingClient, Vectors
from memory_service.providers.errors import (
    EmbedQueueFull,
    ProviderInputError,
    ProviderUnavailable,
)
from memory_service.providers.local import LocalProvider
from tests.fakes import FlakyProvider

# Bounds a wait that only a wedge would exhaust; nothing asserts on durations.
WEDGED_SECONDS = 60.0


class Recording(FlakyProvider):
    """Records what each provider call received."""

    def __init__(self, inner: LocalProvider) -> None:
        super().__init__(inner)
        self.max_batch = 1024
        self.batches: list[list[str]] = []

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        return await super()._embed_batch(texts)


def over(
    client: EmbeddingClient, window_seconds: float, max_batch: int, max_waiting: int | None = None
) -> CoalescingEmbedder:
    """The coalescer over one client, as the embedder port (its space is not stored here)."""
    space = EmbeddingSpace(0, "default", client.model_id, client.dimension, client.normalized)
    return CoalescingEmbedder(
        ClientEmbedder(client, space), window_seconds, max_batch, max_waiting=max_waiting
    )


class TestCoalescingEmbedder:
    async def test_concurrent_calls_share_one_provider_call(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        coalescer = over(inner, 1.0, 256)
        texts = [f"memory number {i}" for i in range(64)]
        results = await asyncio.gather(*(coalescer.embed([text]) for text in texts))
        assert len(inner.batches) == 1
        assert sorted(inner.batches[0]) == sorted(texts)
        direct = await local_provider.embed(texts)
        for text_index, embedding in enumerate(results):
            assert embedding.vectors.shape == (1, 384) and embedding.provider == inner.name
            assert np.allclose(embedding.vectors[0], direct[text_index], atol=1e-5)

    async def test_identical_texts_are_embedded_once_and_each_caller_keeps_its_order(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        coalescer = over(inner, 1.0, 256)
        first, second, third = await asyncio.gather(
            coalescer.embed(["alpha", "beta"]),
            coalescer.embed(["beta", "alpha", "alpha"]),
            coalescer.embed(["gamma"]),
        )
        assert inner.batches == [["alpha", "beta", "gamma"]]
        one, two, three = first.vectors, second.vectors, third.vectors
        assert np.array_equal(one[0], two[1]) and np.array_equal(two[1], two[2])
        assert np.array_equal(one[1], two[0])
        assert not np.allclose(three[0], one[0])

    async def test_a_full_batch_flushes_without_waiting_for_the_window(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        coalescer = over(inner, 3600, 8)
        results = await asyncio.gather(*(coalescer.embed([f"t{i}"]) for i in range(8)))
        assert len(results) == 8 and len(inner.batches) == 1

    async def test_the_provider_error_reaches_every_caller(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        inner.down = True
        coalescer = over(inner, 1.0, 256)
        outcomes = await asyncio.gather(
            *(coalescer.embed([f"x{i}"]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(outcome, ProviderUnavailable) for outcome in outcomes)
        assert inner.calls == 1

    async def test_one_callers_refused_text_fails_only_that_caller(
        self, local_provider: LocalProvider
    ) -> None:
        coalescer = over(local_provider, 1.0, 256)
        fine, refused, also_fine = await asyncio.gather(
            coalescer.embed(["a fine sentence"]),
            coalescer.embed(["word " * 300]),
            coalescer.embed(["another fine one", "and more"]),
            return_exceptions=True,
        )
        assert isinstance(refused, ProviderInputError)
        assert isinstance(fine, Embedding) and fine.vectors.shape == (1, 384)
        assert isinstance(also_fine, Embedding) and also_fine.vectors.shape == (2, 384)

    async def test_a_call_larger_than_the_batch_passes_through(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        coalescer = over(inner, 3600, 4)
        embedding = await coalescer.embed([f"big {i}" for i in range(10)])
        assert embedding.vectors.shape == (10, 384) and len(inner.batches) == 1

    async def test_empty_input(self, local_provider: LocalProvider) -> None:
        coalescer = over(local_provider, 1.0, 4)
        assert (await coalescer.embed([])).vectors.shape == (0, 384)


class TestBounds:
    async def test_a_flush_never_holds_more_than_max_batch_texts(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        inner.hold = asyncio.Event()
        coalescer = over(inner, 0.001, 8, max_waiting=100)
        first = asyncio.create_task(coalescer.embed(["held back"]))
        await asyncio.wait_for(inner.waiting.wait(), WEDGED_SECONDS)
        # 30 callers of 3 texts arrive while the first flush is in flight.
        callers = [
            asyncio.create_task(coalescer.embed([f"caller {i} text {j}" for j in range(3)]))
            for i in range(30)
        ]
        await asyncio.sleep(0)
        inner.hold.set()
        results = await asyncio.wait_for(asyncio.gather(first, *callers), WEDGED_SECONDS)
        assert all(len(batch) <= 8 for batch in inner.batches), [len(b) for b in inner.batches]
        assert sum(len(batch) for batch in inner.batches) == 1 + 90
        assert [r.vectors.shape[0] for r in results] == [1] + [3] * 30

    async def test_a_full_queue_refuses_at_once_and_a_caller_who_left_is_not_embedded(
        self, local_provider: LocalProvider
    ) -> None:
        inner = Recording(local_provider)
        inner.hold = asyncio.Event()
        coalescer = over(inner, 0.001, 8, max_waiting=10)
        first = asyncio.create_task(coalescer.embed(["in flight"]))
        await asyncio.wait_for(inner.waiting.wait(), WEDGED_SECONDS)
        left = asyncio.create_task(coalescer.embed(["nobody waits for this"] * 1))
        stays = asyncio.create_task(coalescer.embed([f"kept {i}" for i in range(6)]))
        await asyncio.sleep(0)
        with pytest.raises(EmbedQueueFull, match="at most 10"):
            await coalescer.embed([f"one too many {i}" for i in range(4)])
        assert coalescer.depth == 7
        left.cancel()
        await asyncio.wait([left])
        assert coalescer.depth == 6, "a caller who left keeps no room in the queue"
        inner.hold.set()
        await asyncio.wait_for(asyncio.gather(first, stays), WEDGED_SECONDS)
        sent = [text for batch in inner.batches for text in batch]
        assert "nobody waits for this" not in sent
        assert {f"kept {i}" for i in range(6)} <= set(sent)
        assert not any(text.startswith("one too many") for text in sent)
