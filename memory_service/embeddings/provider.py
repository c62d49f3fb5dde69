"""The embedding provider interface.

    ProviderError
    ├── ProviderUnavailable        the provider cannot serve now: fail over, or stay pending
    │   ├── ProviderConnectError   refused, unreachable, connect timeout
    │   ├── ProviderTimeout        no answer within the read timeout
    │   ├── ProviderServerError    5xx, or the connection dropped mid-answer
    │   ├── ProviderModelNotFound  the server does not serve the configured model (404)
    │   └── ProviderBadResponse    an answer of the wrong shape, count, order or dimension
    └── ProviderInputError         the provider refused this input (4xx): never retried

A provider turns texts into float32 vectors of its space's dimension. `embed` splits the
input into batches of at most `max_batch` and checks every batch's shape, so a provider that
returns the wrong count or dimension is an error, never silently stored.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
CountTokens = Callable[[Sequence[str]], list[int]]
T = TypeVar("T")


class Tokenizer(Protocol):
    """The space model's own tokenizer, for work that must count tokens (chunking)."""

    max_input_tokens: int

    async def run_with_counter(self, work: Callable[[CountTokens], T]) -> T:
        """Run `work(count_tokens)` where the tokenizer may be used, off the event loop."""
        ...


class ProviderError(Exception):
    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class ProviderUnavailable(ProviderError):
    pass


class ProviderConnectError(ProviderUnavailable):
    pass


class ProviderTimeout(ProviderUnavailable):
    pass


class ProviderServerError(ProviderUnavailable):
    pass


class ProviderModelNotFound(ProviderUnavailable):
    pass


class ProviderBadResponse(ProviderUnavailable):
    pass


class ProviderInputError(ProviderError):
    """`status` is the provider's own 4xx, relayed by the OpenAI-compatible gateway."""

    def __init__(
        self, provider: str, message: str, index: int | None = None, status: int = 400
    ) -> None:
        super().__init__(provider, message)
        self.index = index
        self.status = status


class EmbeddingProvider(ABC):
    """An async, batched embedder for one model.

    `model_id`, `dimension` and `normalized` describe the embedding space it writes;
    `max_input_tokens` is the model's window including special tokens.
    """

    name: str
    model_id: str
    dimension: int
    normalized: bool
    max_input_tokens: int
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

    async def embed_routed(self, texts: Sequence[str]) -> tuple[Vectors, str]:
        """`embed`, also naming the provider that made the vectors: this one, unless the
        provider routes to others (discovery's RoutedEmbedder)."""
        return await self.embed(texts), self.name

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens each text takes in the model's window, special tokens included; None when
        the provider cannot count locally (a remote server then rejects over-long input)."""
        return None

    def tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer when this process has it; None for remote-only models."""
        return None

    async def probe(self) -> None:  # noqa: B027 - most providers have nothing beyond a canary
        """Protocol-level probe (health and model endpoints); raise ProviderUnavailable kinds."""

    async def check(self) -> None:
        """Raise ProviderUnavailable unless the provider embeds right now."""
        await self.embed(["readiness probe"])

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release what the provider holds."""


Embedded = Vectors | ProviderInputError


async def embed_each(provider: EmbeddingProvider, texts: Sequence[str]) -> list[Embedded]:
    """One result per text: its vector, or the error for a text the provider refuses.

    A refusal (a 4xx for the input) is narrowed down by halving the batch, so one bad text
    never costs the others their vectors. ProviderUnavailable propagates: nothing was refused,
    the provider is just not there.
    """
    if not texts:
        return []
    try:
        vectors = await provider.embed(texts)
    except ProviderInputError as exc:
        if len(texts) == 1:
            return [exc]
        middle = len(texts) // 2
        return [
            *await embed_each(provider, texts[:middle]),
            *await embed_each(provider, texts[middle:]),
        ]
    return list(vectors)
