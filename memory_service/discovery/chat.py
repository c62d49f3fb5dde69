"""The chat half of discovery: probes, health and ranking of chat providers.

Each provider's probe is real (see `chat_clients`: vLLM health and model list, Ollama's
pulled models, a cloud's `GET /models` with its key) and runs concurrently with the others;
live completions feed the same health (passive signals) and breaker as the embedders' do.

Eligibility, in the order it is judged:
1. configured: a provider whose `api_key_env` names an unset variable is never probed and
   never available ("not configured");
2. has answered a probe or a request at least once;
3. its breaker is not open.
Eligible providers are ranked by `scoring.score`, the same formula as the embedders'.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from memory_service.core.settings import Settings
from memory_service.discovery.breaker import CircuitBreaker
from memory_service.discovery.chat_clients import ChatClient
from memory_service.discovery.config import ChatProviderConfig
from memory_service.discovery.scoring import ProviderHealth, record_outcome, score
from memory_service.embeddings.provider import ProviderError


@dataclass
class ManagedChatProvider:
    config: ChatProviderConfig
    client: ChatClient
    breaker: CircuitBreaker
    health: ProviderHealth = field(default_factory=ProviderHealth)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tier(self) -> str:
        return self.config.tier or "local"


@dataclass(frozen=True)
class ChatProviderStatus:
    name: str
    kind: str
    tier: str
    model: str
    context_window: int
    priority: int
    state: str
    eligible: bool
    reason: str
    score: float | None
    latency_ms: float | None
    error_rate: float
    consecutive_failures: int
    last_error: str | None


def build_chat_providers(
    configs: Sequence[ChatProviderConfig], http: httpx.AsyncClient, settings: Settings
) -> list[ManagedChatProvider]:
    return [
        ManagedChatProvider(
            config,
            ChatClient(config, http),
            CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_cooldown_seconds),
        )
        for config in configs
    ]


class ChatDiscovery:
    def __init__(
        self,
        providers: Sequence[ManagedChatProvider],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self._clock = clock

    def add_provider(self, provider: ManagedChatProvider) -> None:
        """A provider that joins at run time (a `vllm serve --runner generate` server)."""
        if any(p.name == provider.name for p in self.providers):
            raise ValueError(f"a chat provider named {provider.name!r} exists")
        self.providers.append(provider)

    def remove_provider(self, name: str) -> None:
        self.providers = [p for p in self.providers if p.name != name]

    async def probe_all(self) -> None:
        due = [p for p in self.providers if p.config.configured and p.breaker.allow()]
        await asyncio.gather(*(self._probe(provider) for provider in due))

    async def _probe(self, provider: ManagedChatProvider) -> None:
        started = self._clock()
        try:
            await provider.client.probe()
        except asyncio.CancelledError:
            provider.breaker.release_trial()
            raise
        except ProviderError as exc:
            self.observe(provider, None, str(exc))
            return
        except Exception as exc:  # a bug or a library error must not stall the breaker
            self.observe(provider, None, f"{type(exc).__name__}: {exc}")
            return
        self.observe(provider, (self._clock() - started) * 1000, None)

    def observe(
        self, provider: ManagedChatProvider, latency_ms: float | None, error: str | None
    ) -> None:
        """Record one call's outcome (probe or live): health and breaker."""
        record_outcome(provider.health, provider.breaker, latency_ms, error)

    def ineligibility(self, provider: ManagedChatProvider) -> str | None:
        """Why the provider may not serve chat now; None when it may."""
        if not provider.config.configured:
            return f"not configured: set {provider.config.api_key_env}"
        if provider.health.successes == 0:
            return f"has not answered yet: {provider.health.last_error or 'not probed'}"
        reopens_in = provider.breaker.reopens_in()
        if reopens_in is not None and reopens_in > 0:
            return f"circuit open: a trial in {reopens_in:.1f}s"
        return None

    def ranked(self, tier: str | None = None) -> list[ManagedChatProvider]:
        """Eligible providers of `tier` (any when None), best first."""
        eligible = [
            p
            for p in self.providers
            if (tier is None or p.tier == tier) and self.ineligibility(p) is None
        ]
        return sorted(eligible, key=lambda p: -score(p.health, p.config.priority))

    def status(self) -> list[ChatProviderStatus]:
        rows = []
        for provider in sorted(self.providers, key=lambda p: (p.tier, p.config.priority)):
            reason = self.ineligibility(provider)
            configured = provider.config.configured
            rows.append(
                ChatProviderStatus(
                    name=provider.name,
                    kind=provider.config.kind,
                    tier=provider.tier,
                    model=provider.config.model,
                    context_window=provider.config.context_window,
                    priority=provider.config.priority,
                    state=provider.breaker.state.value if configured else "not_configured",
                    eligible=reason is None,
                    reason=reason or "eligible",
                    score=score(provider.health, provider.config.priority)
                    if reason is None
                    else None,
                    latency_ms=provider.health.latency_ms,
                    error_rate=provider.health.error_rate,
                    consecutive_failures=provider.breaker.consecutive_failures,
                    last_error=provider.health.last_error,
                )
            )
        return rows
