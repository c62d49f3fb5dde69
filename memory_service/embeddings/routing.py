"""The embedder the service uses: the registry's ranking plus failover inside one request.

Each call tries the eligible providers best first. A provider that fails with a 5xx, a
timeout, a dropped or refused connection (ProviderUnavailable) is recorded and the same
texts go to the next one; a 4xx caused by the input (ProviderInputError) is returned to the
caller untried elsewhere. A provider whose breaker is open is skipped without a call. When
no eligible provider is left, the call fails with ProviderUnavailable: writes then stay
pending and searches answer 503. Vectors only ever come from providers eligible for the
service's space (the registry's `Parity` task), so spaces are never mixed.
"""

import asyncio
import time
from collections.abc import Sequence

from memory_service.core.telemetry import observe_embed
from memory_service.embeddings.port import Embedding
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import EmbeddingClient, Tokenizer
from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.registry import EmbedProvider, Registry


class RoutedEmbedder:
    def __init__(self, registry: Registry[EmbedProvider], space: EmbeddingSpace) -> None:
        self.registry = registry
        self.space = space
        # Tokens are counted by a local client of the space's model, when there is one.
        counters = [
            p.client
            for p in registry.providers
            if p.client.window is not None and p.declared.model == space.model
        ]
        self._counter: EmbeddingClient | None = counters[0] if counters else None
        self.window = self._counter.window if self._counter else None

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """The vectors and the name of the provider that made them (each provider's client
        has checked their shape)."""
        tried: list[str] = []
        for provider in self.registry.ranked():
            if not provider.breaker.allow():
                continue
            started = time.monotonic()
            try:
                vectors = await provider.client.embed(texts)
            except ProviderInputError:
                self.registry.observe(provider, (time.monotonic() - started) * 1000, None)
                observe_embed(provider.name, len(texts), "input_error", None)
                raise
            except ProviderUnavailable as exc:
                self.registry.observe(provider, None, str(exc))
                observe_embed(provider.name, len(texts), "unavailable", None)
                tried.append(f"{provider.name}: {exc}")
                continue
            except asyncio.CancelledError:
                provider.breaker.release_trial()
                raise
            except Exception as exc:  # a bug or a library error: still this provider's failure
                self.registry.observe(provider, None, f"{type(exc).__name__}: {exc}")
                observe_embed(provider.name, len(texts), "error", None)
                tried.append(f"{provider.name}: {type(exc).__name__}: {exc}")
                continue
            seconds = time.monotonic() - started
            self.registry.observe(provider, seconds * 1000, None)
            observe_embed(provider.name, len(texts), "ok", seconds)
            return Embedding(vectors, provider.name)
        reasons = tried or [
            f"{p.name}: {self.registry.ineligibility(p) or 'busy (half-open trial)'}"
            for p in self.registry.providers
        ]
        raise ProviderUnavailable(
            "registry",
            f"no provider can embed space {self.space.name!r} now ({'; '.join(reasons)})",
        )

    def tokenizer(self) -> Tokenizer | None:
        return None if self._counter is None else self._counter.tokenizer()

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Counted by a local provider of the same model when there is one; else None and
        the remote server rejects over-long input itself."""
        return None if self._counter is None else await self._counter.count_tokens(texts)
