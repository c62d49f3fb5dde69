"""Discovery: probes every provider, keeps its health, and ranks who may embed a space.

A probe is real and concurrent: the client's protocol probe (vLLM `GET {root}/health` and
`/v1/models`, Ollama `/api/version` and `/api/tags`) and then a canary embed that measures
latency and dimension. Live calls feed the same health (passive signals). A provider whose
breaker is open is not probed until its cooldown ends; the probe is then its single trial.

Eligibility to embed for a space (writes and searches alike), in the order it is judged:
1. declared for that space's model and dimension (`space:` in the provider file);
2. has answered at least once;
3. parity: its canary vectors match the space's reference vectors, cosine >= the minimum
   for each canary (references are captured from the preferred provider that answers first);
4. its breaker is not open.
Eligible providers are ranked by `scoring.score`; `best_provider` is the first.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.discovery.breaker import CircuitBreaker
from memory_service.discovery.chat import ChatDiscovery, ManagedChatProvider
from memory_service.discovery.config import ProviderConfig, SpaceConfig
from memory_service.discovery.scoring import ProviderHealth, record_outcome, score
from memory_service.embeddings.provider import EmbeddingProvider, ProviderError, Vectors
from memory_service.embeddings.spaces import EmbeddingSpace, capture_references, load_references

log = logging.getLogger(__name__)

CANARY_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Remember that the team meeting moved to Thursday afternoon.",
    "PostgreSQL stores embedding vectors with the pgvector extension.",
)


@dataclass
class ManagedProvider:
    config: ProviderConfig
    client: EmbeddingProvider
    declared: SpaceConfig
    breaker: CircuitBreaker
    health: ProviderHealth = field(default_factory=ProviderHealth)
    parity: float | None = None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    kind: str
    space: str
    model: str
    priority: int
    state: str
    eligible: bool
    reason: str
    score: float | None
    latency_ms: float | None
    error_rate: float
    consecutive_failures: int
    parity: float | None
    last_error: str | None


class Discovery:
    def __init__(
        self,
        providers: Sequence[ManagedProvider],
        space: EmbeddingSpace,
        engine: AsyncEngine,
        *,
        parity_min_cosine: float = 0.99,
        clock: Callable[[], float] = time.monotonic,
        chat: ChatDiscovery | None = None,
    ) -> None:
        self.providers = list(providers)
        self.chat = chat if chat is not None else ChatDiscovery([], clock=clock)
        self.space = space
        self._engine = engine
        self._parity_min = parity_min_cosine
        self._clock = clock
        self._references: Vectors | None = None
        self._canary_texts: tuple[str, ...] = CANARY_TEXTS

    def add_provider(self, provider: ManagedProvider) -> None:
        """Add a provider at run time (a started vLLM server); probed from the next round."""
        if any(existing.name == provider.name for existing in self.providers):
            raise ValueError(f"a provider named {provider.name!r} exists already")
        self.providers.append(provider)

    def remove_provider(self, name: str) -> ManagedProvider | None:
        """Remove a provider added at run time; the removed one, None if there was none."""
        for index, provider in enumerate(self.providers):
            if provider.name == name:
                return self.providers.pop(index)
        return None

    async def probe_all(self) -> None:
        """Probe every provider concurrently: the embedders (then parity, judged in priority
        order, without waiting for chat) and the chat providers."""
        await asyncio.gather(self._probe_embedders(), self.chat.probe_all())

    async def _probe_embedders(self) -> None:
        await self._load_references()
        due = [provider for provider in self.providers if provider.breaker.allow()]
        canaries = await asyncio.gather(*(self._probe(provider) for provider in due))
        for provider, vectors in sorted(
            zip(due, canaries, strict=True), key=lambda pair: pair[0].config.priority
        ):
            if vectors is not None and self._declared_for(provider):
                provider.parity = await self._parity(provider, vectors)

    async def _probe(self, provider: ManagedProvider) -> Vectors | None:
        started = self._clock()
        try:
            await provider.client.probe()
            vectors = await provider.client.embed(self._canary_texts)
        except asyncio.CancelledError:
            provider.breaker.release_trial()
            raise
        except ProviderError as exc:
            self.observe(provider, None, str(exc))
            return None
        except Exception as exc:  # a bug or a library error must not stall the breaker
            self.observe(provider, None, f"{type(exc).__name__}: {exc}")
            return None
        self.observe(provider, (self._clock() - started) * 1000, None)
        return vectors

    async def _load_references(self) -> None:
        """Probe with the canary texts the space's references were made of, once they exist."""
        if self._references is None:
            stored = await load_references(self._engine, self.space.id)
            if stored is not None:
                self._canary_texts, self._references = stored

    async def _parity(self, provider: ManagedProvider, vectors: Vectors) -> float:
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

    def observe(
        self, provider: ManagedProvider, latency_ms: float | None, error: str | None
    ) -> None:
        """Record one call's outcome (probe or live): health and breaker."""
        record_outcome(provider.health, provider.breaker, latency_ms, error)

    def _declared_for(self, provider: ManagedProvider) -> bool:
        declared, space = provider.declared, self.space
        return (declared.model, declared.dimension, declared.normalized) == (
            space.model,
            space.dimension,
            space.normalized,
        )

    def ineligibility(self, provider: ManagedProvider) -> str | None:
        """Why the provider may not embed for the space now; None when it may."""
        declared = provider.declared
        if not self._declared_for(provider):
            return (
                f"declared for space {provider.config.space!r} ({declared.model}, "
                f"{declared.dimension}-dim), not {self.space.model} ({self.space.dimension}-dim)"
            )
        if provider.health.successes == 0:
            return f"has not answered yet: {provider.health.last_error or 'not probed'}"
        if provider.parity is None:
            return "parity not checked yet"
        if provider.parity < self._parity_min:
            return f"parity failed: canary cosine {provider.parity:.4f} < {self._parity_min}"
        reopens_in = provider.breaker.reopens_in()
        if reopens_in is not None and reopens_in > 0:
            return f"circuit open: a trial in {reopens_in:.1f}s"
        return None

    def ranked(self) -> list[ManagedProvider]:
        """Eligible providers, best first."""
        eligible = [p for p in self.providers if self.ineligibility(p) is None]
        return sorted(eligible, key=lambda p: -score(p.health, p.config.priority))

    @overload
    def best_provider(
        self, task: Literal["embed"] = "embed", space: str | None = None
    ) -> ManagedProvider | None: ...

    @overload
    def best_provider(
        self, task: Literal["chat"], space: str | None = None
    ) -> ManagedChatProvider | None: ...

    def best_provider(
        self, task: str = "embed", space: str | None = None
    ) -> ManagedProvider | ManagedChatProvider | None:
        """The best eligible provider for `task` ("embed" in `space`, default the service's
        space; or "chat", any tier: chat routing itself is the escalation policy's)."""
        if task == "chat":
            chat = self.chat.ranked()
            return chat[0] if chat else None
        if task != "embed":
            raise ValueError(f"unknown task {task!r}")
        if space is not None and space != self.space.name:
            raise ValueError(f"this service embeds space {self.space.name!r}, not {space!r}")
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def status(self) -> list[ProviderStatus]:
        rows = []
        for provider in sorted(self.providers, key=lambda p: p.config.priority):
            reason = self.ineligibility(provider)
            rows.append(
                ProviderStatus(
                    name=provider.name,
                    kind=provider.config.kind,
                    space=provider.config.space,
                    model=provider.client.model_id,
                    priority=provider.config.priority,
                    state=provider.breaker.state.value,
                    eligible=reason is None,
                    reason=reason or "eligible",
                    score=score(provider.health, provider.config.priority)
                    if reason is None
                    else None,
                    latency_ms=provider.health.latency_ms,
                    error_rate=provider.health.error_rate,
                    consecutive_failures=provider.breaker.consecutive_failures,
                    parity=provider.parity,
                    last_error=provider.health.last_error,
                )
            )
        return rows

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.probe_all()
            except Exception:
                log.exception("discovery probe round failed")


def min_cosine(references: Vectors, vectors: Vectors) -> float:
    """The lowest cosine between each canary's reference and candidate vector; -1 when the
    shapes differ (another dimension can never be at parity)."""
    if references.shape != vectors.shape:
        return -1.0
    dots = np.sum(references * vectors, axis=1)
    norms = np.linalg.norm(references, axis=1) * np.linalg.norm(vectors, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-12)))
