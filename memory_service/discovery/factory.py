"""Clients for the configured providers, each with its breaker, sharing one HTTP client."""

import httpx

from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.discovery.breaker import CircuitBreaker
from memory_service.discovery.config import (
    LocalProviderConfig,
    OllamaProviderConfig,
    ProviderConfig,
    ProvidersConfig,
    SpaceConfig,
)
from memory_service.discovery.registry import ManagedProvider
from memory_service.embeddings.local import LocalProvider
from memory_service.embeddings.ollama import OllamaEmbeddings
from memory_service.embeddings.openai import OpenAIEmbeddings
from memory_service.embeddings.provider import EmbeddingProvider


async def build_providers(
    config: ProvidersConfig,
    space_name: str,
    http: httpx.AsyncClient,
    settings: Settings,
    local: LocalProvider | None = None,
) -> list[ManagedProvider]:
    """Every HTTP provider of the file (those of other spaces show up as ineligible), and
    the local ones of this service's space only: loading a model nobody may use is waste.
    `local` is an already loaded bundled model to use for a local provider without a path.
    """
    managed = []
    for provider in config.providers:
        declared = config.spaces[provider.space]
        if isinstance(provider, LocalProviderConfig):
            if provider.space != space_name:
                continue
            client: EmbeddingProvider = await _local(provider, declared, local)
        else:
            client = _http_client(provider, declared, http)
        breaker = CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_cooldown_seconds
        )
        managed.append(ManagedProvider(provider, client, declared, breaker))
    return managed


def _http_client(
    provider: ProviderConfig, declared: SpaceConfig, http: httpx.AsyncClient
) -> EmbeddingProvider:
    assert not isinstance(provider, LocalProviderConfig)
    timeout = httpx.Timeout(provider.read_timeout, connect=provider.connect_timeout)
    if isinstance(provider, OllamaProviderConfig):
        return OllamaEmbeddings(
            name=provider.name,
            base_url=provider.base_url,
            served_model=provider.model,
            dimension=declared.dimension,
            normalized=declared.normalized,
            max_batch=provider.max_batch,
            timeout=timeout,
            http=http,
            keep_alive=provider.keep_alive,
        )
    return OpenAIEmbeddings(
        name=provider.name,
        base_url=provider.base_url,
        served_model=provider.model,
        dimension=declared.dimension,
        normalized=declared.normalized,
        max_batch=provider.max_batch,
        timeout=timeout,
        http=http,
        api_key=provider.api_key,
        has_health=provider.kind == "vllm",
    )


async def _local(
    provider: LocalProviderConfig, declared: SpaceConfig, loaded: LocalProvider | None
) -> LocalProvider:
    if loaded is not None and provider.path in (None, loaded.path):
        client = loaded
    else:
        client = await LocalProvider.load(provider.path, declared.model, provider.max_batch)
    if client.dimension != declared.dimension or client.model_id != declared.model:
        raise StartupError(
            f"local provider {provider.name!r} runs {client.model_id} ({client.dimension}-dim), "
            f"but its space is declared as {declared.model} ({declared.dimension}-dim)"
        )
    return client
