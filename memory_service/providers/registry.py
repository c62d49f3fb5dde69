"""The provider registry: probes providers, keeps their health, and ranks who may serve.

One class serves every task. It owns what all providers share: the probe round, the
observation of every call (probe or live) into health and breaker, adding and removing
providers at run time, eligibility, ranking by `scoring.score`, and the status rows. What
a task adds plugs in as a `Task`: embedders plug in the space's parity
(`embeddings.parity.Parity`), chat plugs in nothing and ranks within a tier
(`ranked(where=...)`).

A probe is the client's protocol probe (vLLM `GET {root}/health` and `/v1/models`, Ollama
`/api/version` and `/api/tags`, a cloud's `GET /models`), then the task's trial (an
embedder's canary embed, which measures latency and dimension). Probes run concurrently. A
provider whose breaker is open is not probed until its cooldown ends; the probe is then its
single trial.

Eligibility, in the order it is judged:
1. configured: a provider whose `api_key_env` names an unset variable is never probed;
2. fit for the task (an embedder declared for the service's space);
3. has answered at least once;
4. proven by the task (an embedder's parity with the space's reference vectors);
5. its breaker is not open.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from memory_service.core.db import failure_text
from memory_service.providers.breaker import CircuitBreaker
from memory_service.providers.chat import ChatClient
from memory_service.providers.config import ChatProviderConfig, EmbedderConfig, SpaceConfig
from memory_service.providers.embedding import EmbeddingClient
from memory_service.providers.errors import ProviderError
from memory_service.providers.scoring import ProviderHealth, record_outcome, score

log = logging.getLogger(__name__)


class _Config(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def missing(self) -> str | None: ...


class _Client(Protocol):
    async def probe(self) -> None: ...


C = TypeVar("C", bound=_Config)
K = TypeVar("K", bound=_Client)


@dataclass(kw_only=True)
class Managed(Generic[C, K]):
    """A provider as the registry keeps it: its configuration, client, breaker and health."""

    config: C
    client: K
    breaker: CircuitBreaker
    health: ProviderHealth = field(default_factory=ProviderHealth)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        """The model name the provider serves."""
        raise NotImplementedError


@dataclass(kw_only=True)
class EmbedProvider(Managed[EmbedderConfig, EmbeddingClient]):
    """`declared` is the space the provider is declared for (model, dimension, normalized);
    `parity` the lowest canary cosine against the space's references, once measured."""

    declared: SpaceConfig
    parity: float | None = None

    @property
    def model(self) -> str:
        return self.client.model_id


@dataclass(kw_only=True)
class ChatProvider(Managed[ChatProviderConfig, ChatClient]):
    @property
    def tier(self) -> str:
        return self.config.tier or "local"

    @property
    def model(self) -> str:
        return self.config.model


P = TypeVar("P", bound=Managed[Any, Any])


class Task(Generic[P]):
    """What a task adds to the registry's rules; the base adds nothing (chat's case)."""

    def unfit(self, provider: P) -> str | None:
        """Why the provider can never serve this task as configured; None when it can."""
        return None

    async def trial(self, provider: P) -> object:
        """A task-level call after the protocol probe, timed with it (an embedder's canary)."""
        return None

    async def settle(self, trials: Sequence[tuple[P, object]]) -> None:
        """Judge the trials of one round, in priority order (an embedder's parity)."""

    def unproven(self, provider: P) -> str | None:
        """Why a provider that answers may not serve yet (failed parity); None when it may."""
        return None

    def details(self, provider: P) -> dict[str, Any]:
        """The task's own fields of the provider's status row."""
        return {}

    def order(self, provider: P) -> tuple[Any, ...]:
        """Where the provider's status row stands (priority order within the task's groups)."""
        return (provider.config.priority,)


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    kind: str
    model: str
    priority: int
    state: str
    eligible: bool
    reason: str
    score: float | None
    latency_ms: float | None
    error_rate: float
    consecutive_failures: int
    last_error: str | None
    details: dict[str, Any]


class Registry(Generic[P]):
    def __init__(
        self,
        providers: Sequence[P],
        task: Task[P] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self.task: Task[P] = task if task is not None else Task()
        self._clock = clock

    def add_provider(self, provider: P) -> None:
        """Add a provider at run time (a started vLLM server); probed from the next round."""
        if any(existing.name == provider.name for existing in self.providers):
            raise ValueError(f"a provider named {provider.name!r} exists already")
        self.providers.append(provider)

    def remove_provider(self, name: str) -> P | None:
        """Remove a provider added at run time; the removed one, None if there was none."""
        for index, provider in enumerate(self.providers):
            if provider.name == name:
                return self.providers.pop(index)
        return None

    async def probe_all(self) -> None:
        """Probe every configured provider whose breaker allows it, concurrently; then let
        the task judge the trials in priority order."""
        due = [p for p in self.providers if p.config.missing is None and p.breaker.allow()]
        trials = await asyncio.gather(*(self._probe(provider) for provider in due))
        answered = [(p, trial) for p, (ok, trial) in zip(due, trials, strict=True) if ok]
        await self.task.settle(sorted(answered, key=lambda pair: pair[0].config.priority))

    async def _probe(self, provider: P) -> tuple[bool, object]:
        started = self._clock()
        try:
            await provider.client.probe()
            trial = await self.task.trial(provider)
        except asyncio.CancelledError:
            provider.breaker.release_trial()
            raise
        except ProviderError as exc:
            self.observe(provider, None, str(exc))
            return False, None
        except Exception as exc:  # a bug or a library error must not stall the breaker
            self.observe(provider, None, f"{type(exc).__name__}: {exc}")
            return False, None
        self.observe(provider, (self._clock() - started) * 1000, None)
        return True, trial

    def observe(self, provider: P, latency_ms: float | None, error: str | None) -> None:
        """Record one call's outcome (probe or live): health and breaker."""
        record_outcome(provider.health, provider.breaker, latency_ms, error)

    def ineligibility(self, provider: P) -> str | None:
        """Why the provider may not serve now; None when it may."""
        missing = provider.config.missing
        if missing is not None:
            return f"not configured: {missing}"
        unfit = self.task.unfit(provider)
        if unfit is not None:
            return unfit
        if provider.health.successes == 0:
            return f"has not answered yet: {provider.health.last_error or 'not probed'}"
        unproven = self.task.unproven(provider)
        if unproven is not None:
            return unproven
        reopens_in = provider.breaker.reopens_in()
        if reopens_in is not None and reopens_in > 0:
            return f"circuit open: a trial in {reopens_in:.1f}s"
        return None

    def ranked(self, where: Callable[[P], bool] | None = None) -> list[P]:
        """Eligible providers (of those `where` admits), best first."""
        eligible = [
            p
            for p in self.providers
            if (where is None or where(p)) and self.ineligibility(p) is None
        ]
        return sorted(eligible, key=lambda p: -score(p.health, p.config.priority))

    def best(self) -> P | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def status(self) -> list[ProviderStatus]:
        rows = []
        for provider in sorted(self.providers, key=self.task.order):
            reason = self.ineligibility(provider)
            configured = provider.config.missing is None
            rows.append(
                ProviderStatus(
                    name=provider.name,
                    kind=provider.config.kind,
                    model=provider.model,
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
                    details=self.task.details(provider),
                )
            )
        return rows


class ChatTiers(Task[ChatProvider]):
    """Chat's part: status rows grouped by tier, with each model's context window. Routing
    ranks within a tier (`ranked(where=...)`); escalation between tiers is the gateway's."""

    def details(self, provider: ChatProvider) -> dict[str, Any]:
        return {"tier": provider.tier, "context_window": provider.config.context_window}

    def order(self, provider: ChatProvider) -> tuple[Any, ...]:
        return (provider.tier, provider.config.priority)


@dataclass(kw_only=True)
class Providers:
    """Every provider of the service, by task, probed together."""

    embed: Registry[EmbedProvider]
    chat: Registry[ChatProvider]

    async def probe_all(self) -> None:
        await asyncio.gather(self.embed.probe_all(), self.chat.probe_all())

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.probe_all()
            except Exception as exc:
                log.error("provider probe round failed: %s", failure_text(exc))
