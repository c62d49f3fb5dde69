"""Stand-ins for external parts. Only dependencies are faked here, never code under test."""

import asyncio
from collections import Counter
from collections.abc import Sequence

from memory_service.providers.embedding import EmbeddingClient, Tokenizer, Vectors
from memory_service.providers.errors import ProviderUnavailable


class FlakyProvider(EmbeddingClient):
    """The real provider, plus a switch that makes it unavailable like a dead server.

    Memories tests use it to show what the service does when its embedder fails; the
    embedding itself is always the real model's.
    """

    def __init__(self, inner: EmbeddingClient) -> None:
        self.inner = inner
        self.name = f"flaky-{inner.name}"
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.normalized = inner.normalized
        self.window = inner.window
        self.max_batch = inner.max_batch
        self.down = False
        self.calls = 0
        # How many times each text was embedded (by a call that returned vectors).
        self.embedded: Counter[str] = Counter()
        # A test that sets `hold` makes calls wait for it (`waiting` says one does): a slow
        # embedder, so the test can act while a call is in flight.
        self.hold: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.hold is not None:
            self.waiting.set()
            await self.hold.wait()
        if self.down:
            raise ProviderUnavailable(self.name, "connection refused (switched off by the test)")
        vectors = await self.inner._embed_batch(texts)
        self.embedded.update(texts)
        return vectors

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return await self.inner.count_tokens(texts)

    def tokenizer(self) -> Tokenizer | None:
        return self.inner.tokenizer()
