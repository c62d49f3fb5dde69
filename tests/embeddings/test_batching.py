"""Request coalescing over the real model: many concurrent calls, one provider call."""

import asyncio
from collections.abc import Sequence

import numpy as np

from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.embeddings.port import ClientEmbedder, Embedding
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import EmbeddingClient, Vectors
from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.local import LocalProvider
from tests.fakes import FlakyProvider


class Recording(FlakyProvider):
    """Records what each provider call received."""

    def __init__(self, inner: LocalProvider) -> None:
        super().__init__(inner)
        self.max_batch = 1024
        self.batches: list[list[str]] = []

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        return await super()._embed_batch(texts)


def over(client: EmbeddingClient, window_seconds: float, max_batch: int) -> CoalescingEmbedder:
    """The coalescer over one client, as the embedder port (its space is not stored here)."""
    space = EmbeddingSpace(0, "default", client.model_id, client.dimension, client.normalized)
    return CoalescingEmbedder(ClientEmbedder(client, space), window_seconds, max_batch)


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
