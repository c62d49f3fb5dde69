"""A running service's provider registries follow the vLLM registrations of its data folder.

Every probe interval, `RegistrationWatcher.sync` reads `<data_dir>/vllm/*.json` and makes the
set of run-time providers match the `pooling` registrations of the service's space: a new
registration becomes an `EmbedProvider` of kind `vllm` (named `managed-<name>`), a removed
or changed one is dropped. The next probe round probes it like any configured provider.
`generate` registrations join the chat registry the same way, as local `vllm` chat providers
(`managed-<name>`, serving `served_model`), their context window read from the server's own
`GET /v1/models` (`max_model_len`) when they join.

Eligibility is not granted here: the provider is declared for the space's model under its
served model name, with the space's dimension and normalization, so the usual rules decide.
A server serving the space's model under that name must still pass the parity probe; one
serving another model (another name) shows as declared for another model; one of another
dimension fails parity (cosine -1). A registration is skipped, with a warning, when its
space is another, or its name or base URL is already a configured provider's (the same
server must not count twice).
"""

import asyncio
import logging

import httpx

from memory_service.core.db import failure_text
from memory_service.core.settings import Settings
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.config import (
    CHAT_MIN_CONTEXT_WINDOW,
    ChatProviderConfig,
    OpenAIProviderConfig,
    ProvidersConfig,
    SpaceConfig,
)
from memory_service.providers.factory import build_chat_providers, build_embed_providers
from memory_service.providers.http import new_client
from memory_service.providers.registry import ChatProvider, EmbedProvider, Providers
from memory_service.serving.registrations import VllmRegistration, read_registrations

log = logging.getLogger(__name__)

PROVIDER_PREFIX = "managed-"


class RegistrationWatcher:
    def __init__(
        self,
        *,
        providers: Providers,
        space: EmbeddingSpace,
        settings: Settings,
        http: httpx.AsyncClient,
    ) -> None:
        self._providers = providers
        self._space = space
        self._settings = settings
        self._http = http
        self._added: dict[str, VllmRegistration] = {}  # provider name -> its registration
        self._chat_added: dict[str, VllmRegistration] = {}
        self._warned: set[str] = set()

    async def sync(self) -> None:
        await self._sync_embedders()
        await self._sync_chat()

    async def _sync_chat(self) -> None:
        chat = self._providers.chat
        wanted = {
            PROVIDER_PREFIX + r.name: r
            for r in read_registrations(self._settings.vllm_dir, runner="generate")
            if self._usable_for_chat(r)
        }
        for name, registration in list(self._chat_added.items()):
            if wanted.get(name) != registration:
                await _close(chat.remove_provider(name))
                del self._chat_added[name]
                log.info("chat providers: removed %s (%s)", name, registration.base_url)
        for name, registration in wanted.items():
            if name not in self._chat_added:
                window = await self._context_window(registration)
                config = ChatProviderConfig(
                    name=name,
                    kind="vllm",
                    base_url=registration.base_url,
                    model=registration.served_model,
                    context_window=window,
                    priority=self._settings.vllm_provider_priority,
                )
                (provider,) = build_chat_providers([config], self._settings)
                try:
                    chat.add_provider(provider)
                except BaseException:
                    await _close(provider)
                    raise
                self._chat_added[name] = registration
                log.info("chat providers: added %s (%s)", name, registration.base_url)

    def _usable_for_chat(self, registration: VllmRegistration) -> bool:
        configured = [p for p in self._providers.chat.providers if p.name not in self._chat_added]
        name = PROVIDER_PREFIX + registration.name
        root = registration.base_url.rstrip("/")
        if any(p.name == name or p.config.base_url.rstrip("/") == root for p in configured):
            if registration.name not in self._warned:
                self._warned.add(registration.name)
                log.warning("chat discovery ignores %s: already configured", registration.name)
            return False
        return True

    async def _context_window(self, registration: VllmRegistration) -> int:
        """The server's `max_model_len` for the served model; the smallest window the
        configuration accepts when the server does not say (routing then stays cautious)."""
        url = f"{registration.base_url.rstrip('/')}/v1/models"
        try:
            response = await self._http.get(url, timeout=5)
            cards = response.json().get("data", [])
            for card in cards:
                if card.get("id") == registration.served_model and card.get("max_model_len"):
                    return int(card["max_model_len"])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.warning("cannot read %s: %r", url, exc)
        return CHAT_MIN_CONTEXT_WINDOW

    async def _sync_embedders(self) -> None:
        wanted = {
            PROVIDER_PREFIX + r.name: r
            for r in read_registrations(self._settings.vllm_dir, runner="pooling")
            if self._usable(r)
        }
        for name, registration in list(self._added.items()):
            if wanted.get(name) != registration:
                await _close(self._providers.embed.remove_provider(name))
                del self._added[name]
                log.info("embedders: removed %s (%s)", name, registration.base_url)
        for name, registration in wanted.items():
            if name not in self._added:
                provider = await self._provider(name, registration)
                try:
                    self._providers.embed.add_provider(provider)
                except BaseException:
                    await _close(provider)
                    raise
                self._added[name] = registration
                log.info("embedders: added %s (%s)", name, registration.base_url)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:
                log.error("vLLM registration sync failed: %s", failure_text(exc))
            await asyncio.sleep(interval_seconds)

    def _usable(self, registration: VllmRegistration) -> bool:
        configured = [p for p in self._providers.embed.providers if p.name not in self._added]
        name = PROVIDER_PREFIX + registration.name
        if registration.space != self._space.name:
            reason = f"declared for space {registration.space!r}"
        elif any(p.name == name for p in configured):
            reason = f"a configured provider is named {name!r}"
        elif any(_root(p.config) == registration.base_url.rstrip("/") for p in configured):
            reason = f"a configured provider already uses {registration.base_url}"
        else:
            return True
        if registration.name not in self._warned:
            self._warned.add(registration.name)
            log.warning("discovery ignores vLLM server %s: %s", registration.name, reason)
        return False

    async def _provider(self, name: str, registration: VllmRegistration) -> EmbedProvider:
        """Built by the registry's own factory, from a one-provider configuration."""
        space = self._space
        config = ProvidersConfig(
            spaces={
                space.name: SpaceConfig(
                    model=registration.served_model,
                    dimension=space.dimension,
                    normalized=space.normalized,
                )
            },
            providers=[
                OpenAIProviderConfig(
                    name=name,
                    kind="vllm",
                    space=space.name,
                    base_url=registration.base_url,
                    model=registration.served_model,
                    priority=self._settings.vllm_provider_priority,
                )
            ],
        )
        (provider,) = await build_embed_providers(config, space.name, self._settings)
        return provider

    async def aclose(self) -> None:
        """Remove the providers it added and close their clients."""
        for name in list(self._added):
            await _close(self._providers.embed.remove_provider(name))
        for name in list(self._chat_added):
            await _close(self._providers.chat.remove_provider(name))
        self._added.clear()
        self._chat_added.clear()


async def _close(provider: EmbedProvider | ChatProvider | None) -> None:
    """A removed provider's client, closed: requests still in flight on it fail over."""
    if provider is not None:
        await provider.client.aclose()


def _root(config: object) -> str | None:
    base_url = getattr(config, "base_url", None)
    return base_url.rstrip("/") if isinstance(base_url, str) else None


async def watch_registrations(
    settings: Settings, providers: Providers, space: EmbeddingSpace
) -> None:
    """The service's watcher task: one sync per probe interval, with an HTTP client of its
    own for reading servers' model cards; the providers it adds have theirs."""
    async with new_client("watcher") as http:
        watcher = RegistrationWatcher(
            providers=providers, space=space, settings=settings, http=http
        )
        try:
            await watcher.run_forever(settings.probe_interval_seconds)
        finally:
            await asyncio.shield(watcher.aclose())
