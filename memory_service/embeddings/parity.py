"""The embedding task of the provider registry: who may embed the service's space.

Plugged into `providers.registry.Registry` as its `Task`, it adds two rules to the
registry's own (configured, has answered, breaker not open):
- fit: the provider is declared for the space's model, dimension and normalization
  (`space:` in the provider file);
- proven: its canary vectors match the space's reference vectors, cosine >= the minimum for
  each canary. The references are captured from the first provider, in priority order,
  that answers the canary, and kept with the space in the database; a restarted service
  probes with the same canary texts.

The trial of a probe is the canary embed, so it measures the provider's latency and
dimension too.
"""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.embeddings.spaces import EmbeddingSpace, capture_references, load_references
from memory_service.providers.embedding import Vectors
from memory_service.providers.registry import EmbedProvider, Task

log = logging.getLogger(__name__)

CANARY_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Remember that the team meeting moved to Thursday afternoon.",
    "PostgreSQL stores embedding vectors with the pgvector extension.",
)


class Parity(Task[EmbedProvider]):
    def __init__(self, *, space: EmbeddingSpace, engine: AsyncEngine, min_cosine: float) -> None:
        self.space = space
        self._engine = engine
        self._min_cosine = min_cosine
        self._references: Vectors | None = None
        self._canary_texts: tuple[str, ...] = CANARY_TEXTS

    def declared_for_space(self, provider: EmbedProvider) -> bool:
        declared, space = provider.declared, self.space
        return (declared.model, declared.dimension, declared.normalized) == (
            space.model,
            space.dimension,
            space.normalized,
        )

    def unfit(self, provider: EmbedProvider) -> str | None:
        if self.declared_for_space(provider):
            return None
        declared = provider.declared
        return (
            f"declared for space {provider.config.space!r} ({declared.model}, "
            f"{declared.dimension}-dim), not {self.space.model} ({self.space.dimension}-dim)"
        )

    async def trial(self, provider: EmbedProvider) -> Vectors:
        await self._load_references()
        return await provider.client.embed(self._canary_texts)

    async def settle(self, trials: Sequence[tuple[EmbedProvider, object]]) -> None:
        for provider, vectors in trials:
            if isinstance(vectors, np.ndarray) and self.declared_for_space(provider):
                provider.parity = await self._parity(provider, vectors)

    def unproven(self, provider: EmbedProvider) -> str | None:
        if provider.parity is None:
            return "parity not checked yet"
        if provider.parity < self._min_cosine:
            return f"parity failed: canary cosine {provider.parity:.4f} < {self._min_cosine}"
        return None

    def details(self, provider: EmbedProvider) -> dict[str, Any]:
        return {"space": provider.config.space, "parity": provider.parity}

    async def _load_references(self) -> None:
        """Probe with the canary texts the space's references were made of, once they exist."""
        if self._references is None:
            stored = await load_references(self._engine, self.space.id)
            if stored is not None:
                self._canary_texts, self._references = stored

    async def _parity(self, provider: EmbedProvider, vectors: Vectors) -> float:
        """The lowest canary cosine against the references; -1 when the space is normalized
        and the vectors are not unit length (another model, or another pooling)."""
        if self.space.normalized and not np.allclose(
            np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3
        ):
            log.warning(
                "%s: canary vectors are not unit length in a normalized space", provider.name
            )
            return -1.0
        if self._references is None:
            self._references = await capture_references(
                self._engine, self.space.id, self._canary_texts, vectors, provider.name
            )
            log.info("space %s: reference vectors captured from %s", self.space.name, provider.name)
        return min_cosine(self._references, vectors)


def min_cosine(references: Vectors, vectors: Vectors) -> float:
    """The lowest cosine between each canary's reference and candidate vector; -1 when the
    shapes differ (another dimension can never be at parity)."""
    if references.shape != vectors.shape:
        return -1.0
    dots = np.sum(references * vectors, axis=1)
    norms = np.linalg.norm(references, axis=1) * np.linalg.norm(vectors, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-12)))
