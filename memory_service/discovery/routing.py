"""The embedder the service uses: discovery's ranking plus failover inside one request.

Each call tries the eligible providers best first. A provider that fails with a 5xx, a
timeout, a dropped or refused connection (ProviderUnavailable) is recorded and the same
texts go to the next one; a 4xx caused by the input (ProviderInputError) is returned to the
caller untried elsewhere. A provider whose breaker is open is skipped without a call. When
no eligible provider is left, the call fails with ProviderUnavailable: writes then stay
pending and searches answer 503. Vectors only ever come from providers eligible for the
service's space, so spaces are never mixed.
"""

import asyncio
import time
from collections.abc import Sequence

from memory_service.discovery.registry import Discovery
from memory_service.embeddings.provider import (
    EmbeddingProvider,
    ProviderInputError,
    ProviderUnavailable,
    Tokenizer,
    Vectors,
)


class RoutedEmbedder(EmbeddingProvider):
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        space = discovery.space
        self.name = "discovery"
        self.model_id = space.model
        self.dimension = space.dimension
        self.normalized = space.normalized
        self.max_batch = 1_000_000  # each provider splits by its own max_batch
        counters = [
            p.client
            for p in discovery.providers
            if p.client.max_input_tokens > 0 and p.declared.model == space.model
        ]
        self._counter = counters[0] if counters else None
        self.max_input_tokens = self._counter.max_input_tokens if self._counter else 0

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        vectors, _ = await self.embed_routed(texts)
        return vectors

    async def embed_routed(self, texts: Sequence[str]) -> tuple[Vectors, str]:
        """The vectors and the name of the provider that made them (each provider's client
        has checked their shape)."""
        tried: list[str] = []
        for provider in self.discovery.ranked():
            if not provider.breaker.allow():
                continue
            started = time.monotonic()
            try:
                vectors = await provider.client.embed(texts)
            except ProviderInputError:
                self.discovery.observe(provider, (time.monotonic() - started) * 1000, None)
                raise
            except ProviderUnavailable as exc:
                self.discovery.observe(provider, None, str(exc))
                tried.append(f"{provider.name}: {exc}")
                continue
            except asyncio.CancelledError:
                provider.breaker.release_trial()
                raise
            except Exception as exc:  # a bug or a library error: still this provider's failure
                self.discovery.observe(provider, None, f"{type(exc).__name__}: {exc}")
                tried.append(f"{provider.name}: {type(exc).__name__}: {exc}")
                continue
            self.discovery.observe(provider, (time.monotonic() - started) * 1000, None)
            return vectors, provider.name
        reasons = tried or [
            f"{p.name}: {self.discovery.ineligibility(p) or 'busy (half-open trial)'}"
            for p in self.discovery.providers
        ]
        raise ProviderUnavailable(
            self.name,
            f"no provider can embed space {self.discovery.space.name!r} now ({'; '.join(reasons)})",
        )

    def tokenizer(self) -> Tokenizer | None:
        return None if self._counter is None else self._counter.tokenizer()

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Counted by a local provider of the same model when there is one; else None and
        the remote server rejects over-long input itself."""
        return None if self._counter is None else await self._counter.count_tokens(texts)
