"""The embedding client: one provider's connection that turns texts into vectors.

A client (OpenAI-compatible, Ollama, local) embeds batches and probes its server; nothing
more. The embedder the domains call (`embeddings.port.Embedder`) is built on clients by
composition: routing over the registry, coalescing, or one fixed client.

`embed` splits the input into batches of at most `max_batch` and checks every batch's
shape, so a provider that returns the wrong count or dimension is an error
(ProviderBadResponse), never silently stored.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from memory_service.providers.errors import ProviderBadResponse, ProviderInputError

Vectors = npt.NDArray[np.float32]
CountTokens = Callable[[Sequence[str]], list[int]]
T = TypeVar("T")


class Tokenizer(Protocol):
    """The space model's own tokenizer, for work that must count tokens (chunking)."""

    window: int

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        """Run `work(count_tokens)` where the tokenizer may be used, off the event loop."""
        ...


class EmbeddingClient(ABC):
    """An async, batched client for one model on one provider.

    `model_id` is the name the provider knows the model by; `dimension` and `normalized`
    describe the vectors it must return. `window` is the model's window in tokens,
    special tokens included, or None when this process cannot know it (a remote server
    then refuses over-long input itself).
    """

    name: str
    model_id: str
    dimension: int
    normalized: bool
    window: int | None
    max_batch: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` in order, in batches of at most `max_batch`.

        A ProviderInputError's `index`, when the provider names one, indexes `texts`.
        """
        parts = []
        for start in range(0, len(texts), self.max_batch):
            try:
                parts.append(await self._checked_batch(texts[start : start + self.max_batch]))
            except ProviderInputError as exc:
                if exc.index is not None and start:
                    exc.index += start
                raise
        if not parts:
            return np.empty((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts)

    async def _checked_batch(self, batch: Sequence[str]) -> Vectors:
        vectors = await self._embed_batch(batch)
        if vectors.shape != (len(batch), self.dimension):
            raise ProviderBadResponse(
                self.name,
                f"returned shape {vectors.shape} for {len(batch)} texts of dimension "
                f"{self.dimension}",
            )
        return vectors.astype(np.float32, copy=False)

    @abstractmethod
    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        """One provider call for at most `max_batch` texts."""

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens each text takes in the model's window, special tokens included; None when
        the client cannot count locally (a remote server then rejects over-long input)."""
        return None

    def tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer when this process has it; None for remote-only models."""
        return None

    async def probe(self) -> None:  # noqa: B027 - most clients have nothing beyond a canary
        """Protocol-level probe (health and model endpoints); raise ProviderUnavailable kinds."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most clients hold nothing
        """Release what the client holds."""
