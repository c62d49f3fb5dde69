"""A running service's discovery follows the vLLM registrations of its data folder.

Every probe interval, `RegistrationWatcher.sync` reads `<data_dir>/vllm/*.json` and makes the
set of run-time providers match the `pooling` registrations of the service's space: a new
registration becomes a `ManagedProvider` of kind `vllm` (named `managed-<name>`), a removed
or changed one is dropped. The next probe round probes it like any configured provider.

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

from memory_service.core.settings import Settings
from memory_service.discovery.config import OpenAIProviderConfig, ProvidersConfig, SpaceConfig
from memory_service.discovery.factory import build_providers
from memory_service.discovery.registry import Discovery, ManagedProvider
from memory_service.models.registrations import VllmRegistration, read_registrations

log = logging.getLogger(__name__)

PROVIDER_PREFIX = "managed-"


class RegistrationWatcher:
    def __init__(self, discovery: Discovery, settings: Settings, http: httpx.AsyncClient) -> None:
        self._discovery = discovery
        self._settings = settings
        self._http = http
        self._added: dict[str, VllmRegistration] = {}  # provider name -> its registration
        self._warned: set[str] = set()

    async def sync(self) -> None:
        wanted = {
            PROVIDER_PREFIX + r.name: r
            for r in read_registrations(self._settings.vllm_dir, runner="pooling")
            if self._usable(r)
        }
        for name, registration in list(self._added.items()):
            if wanted.get(name) != registration:
                self._discovery.remove_provider(name)
                del self._added[name]
                log.info("discovery: removed %s (%s)", name, registration.base_url)
        for name, registration in wanted.items():
            if name not in self._added:
                self._discovery.add_provider(await self._provider(name, registration))
                self._added[name] = registration
                log.info("discovery: added %s (%s)", name, registration.base_url)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("vLLM registration sync failed")
            await asyncio.sleep(interval_seconds)

    def _usable(self, registration: VllmRegistration) -> bool:
        configured = [p for p in self._discovery.providers if p.name not in self._added]
        name = PROVIDER_PREFIX + registration.name
        if registration.space != self._discovery.space.name:
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

    async def _provider(self, name: str, registration: VllmRegistration) -> ManagedProvider:
        """Built by discovery's own factory, from a one-provider configuration."""
        space = self._discovery.space
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
        (provider,) = await build_providers(config, space.name, self._http, self._settings)
        return provider


def _root(config: object) -> str | None:
    base_url = getattr(config, "base_url", None)
    return base_url.rstrip("/") if isinstance(base_url, str) else None


async def watch_registrations(settings: Settings, discovery: Discovery) -> None:
    """The service's watcher task: its own HTTP client, one sync per probe interval."""
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=4)
    ) as http:
        await RegistrationWatcher(discovery, settings, http).run_forever(
            settings.probe_interval_seconds
        )
