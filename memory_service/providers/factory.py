"""The registry's providers, built from the configuration: a client and a breaker each.

Each HTTP provider has an HTTP client and connection pool of its own (`http.new_client`),
closed with the provider's client (`aclose`): open chat streams can never take the
connections an embed needs, nor one provider's stalled requests another provider's.
"""

from collections.abc import Sequence

import httpx

from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.providers.breaker import CircuitBreaker
from memory_service.providers.chat import ChatClient
from memory_service.providers.config import (
    ChatProviderConfig,
    EmbedderConfig,
    LocalProviderConfig,
    OllamaProviderConfig,
    ProvidersConfig,
    SpaceConfig,
)
from memory_service.providers.embedding import EmbeddingClient
from memory_service.providers.http import new_client
from memory_service.providers.local import LocalProvider
from memory_service.providers.ollama import OllamaEmbeddings
from memory_service.providers.openai import OpenAIEmbeddings
from memory_service.providers.registry import ChatProvider, EmbedProvider


async def build_embed_providers(
    config: ProvidersConfig,
    space_name: str,
    settings: Settings,
    local: LocalProvider | None = None,
) -> list[EmbedProvider]:
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
            client: EmbeddingClient = await _local(
                provider, declared, local, settings.model_threads
            )
        else:
            client = _http_client(provider, declared)
        managed.append(
            EmbedProvider(
                config=provider, client=client, declared=declared, breaker=_breaker(settings)
            )
        )
    return managed


def build_chat_providers(
    configs: Sequence[ChatProviderConfig], settings: Settings
) -> list[ChatProvider]:
    return [
        ChatProvider(
            config=config,
            client=ChatClient(config, new_client("chat")),
            breaker=_breaker(settings),
        )
        for config in configs
    ]


def _breaker(settings: Settings) -> CircuitBreaker:
    return CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_cooldown_seconds)


def _http_client(provider: EmbedderConfig, declared: SpaceConfig) -> EmbeddingClient:
    assert not isinstance(provider, LocalProviderConfig)
    http = new_client("embed")
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
    provider: LocalProviderConfig,
    declared: SpaceConfig,
    loaded: LocalProvider | None,
    threads: int | None,
) -> LocalProvider:
    if loaded is not None and provider.path in (None, loaded.path):
        client = loaded
    else:
        client = await LocalProvider.load(
            provider.path, declared.model, provider.max_batch, threads
        )
    if client.dimension != declared.dimension or client.model_id != declared.model:
        raise StartupError(
            f"local provider {provider.name!r} runs {client.model_id} ({client.dimension}-dim), "
            f"but its space is declared as {declared.model} ({declared.dimension}-dim)"
        )
    return client
