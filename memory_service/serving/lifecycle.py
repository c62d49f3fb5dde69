"""The vLLM lifecycle service: serve, stop and status, behind the CLI and the admin endpoints.

`serve` resolves the model (a registry id or a folder inside the registry marks the model
used; another existing folder is taken as is), refuses a name that is already running or a
port in use, starts the server (see `launcher`), waits for its health, and only then writes
the registration that services' discovery picks up. A server that fails to start is stopped
and leaves no registration; its logs stay for the operator.

A registration whose process is gone (a crash, a reboot) is stale: `serve` under the same
name replaces it, `stop` removes it, `status` shows it as not alive.
"""

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx

from memory_service.core.errors import Conflict, InvalidRequest
from memory_service.core.settings import Settings
from memory_service.providers.http import new_client
from memory_service.serving import launcher
from memory_service.serving.manifest import ModelRegistry
from memory_service.serving.registrations import (
    VllmRegistration,
    log_dir_for,
    read_registration,
    read_registrations,
    remove_registration,
    validate_name,
    write_registration,
)
from memory_service.serving.schemas import ServeRequest, ServerStatus, StopResult

log = logging.getLogger(__name__)


class VllmManager:
    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        # Kept by reference: a server inherits the environment as it is when it starts.
        self._environ = environ
        self.admin_token = settings.admin_token
        self.directory = settings.vllm_dir
        self._registry = ModelRegistry(settings.model_registry_dir)
        # One start at a time per process: two starts of one name must not both launch.
        self._starting = asyncio.Lock()

    async def serve(self, request: ServeRequest) -> VllmRegistration:
        """Start a server, wait until healthy, register it; VllmStartFailed otherwise."""
        name = validate_name(request.name or request.served_model_name)
        async with self._starting:
            self._refuse_running(name)
            model = self._resolve_model(request.model)
            launcher.ensure_port_free(request.host, request.port)
            spec = launcher.LaunchSpec(
                model=model,
                served_model_name=request.served_model_name,
                runner=request.runner,
                host=request.host,
                port=request.port,
                extra_args=tuple(request.extra_args),
            )
            return await self._start(name, spec, request)

    async def _start(
        self, name: str, spec: launcher.LaunchSpec, request: ServeRequest
    ) -> VllmRegistration:
        settings, log_dir = self._settings, log_dir_for(self.directory, name)
        command = launcher.server_command(launcher.default_python(settings.vllm_python), spec)
        env = launcher.child_environment(self._environ, settings.vllm_cpu_threads_bind)
        log.info("starting vLLM %s: %s (logs in %s)", name, " ".join(command), log_dir)
        process = launcher.launch(command, env, log_dir)
        try:
            await launcher.wait_healthy(
                process, spec.base_url, log_dir, settings.vllm_health_timeout_seconds
            )
        except BaseException:
            # Cancelled or failed: a half-started server must not linger unregistered.
            await asyncio.to_thread(
                launcher.terminate_group, process.pid, settings.vllm_stop_timeout_seconds
            )
            raise
        registration = VllmRegistration(
            name=name,
            pid=process.pid,
            port=spec.port,
            base_url=spec.base_url,
            served_model=spec.served_model_name,
            model=spec.model,
            runner=spec.runner,
            space=request.space or settings.embedding_space,
            started_at=datetime.now(UTC),
            log_dir=log_dir,
        )
        write_registration(self.directory, registration)
        log.info("vLLM %s is healthy at %s (pid %d)", name, spec.base_url, process.pid)
        return registration

    def stop(self, name: str) -> StopResult:
        """Stop the server's process group (bounded) and remove its registration."""
        registration = read_registration(self.directory, name)
        outcome = "not running"
        pid = registration.pid
        # Signalled when the pid still runs vLLM, or when the leader is gone but its group
        # lives on (orphaned engine processes); a pid reused by another program is left alone.
        leader_gone = not launcher.pid_alive(pid)
        if launcher.is_vllm_server(pid) or (leader_gone and launcher.group_alive(pid)):
            outcome = launcher.terminate_group(
                registration.pid, self._settings.vllm_stop_timeout_seconds
            )
        remove_registration(self.directory, name)
        return StopResult(name=name, outcome=outcome)

    async def status(self) -> list[ServerStatus]:
        registrations = read_registrations(self.directory)
        async with new_client("health", httpx.Timeout(2.0)) as http:
            return list(await asyncio.gather(*(_status(http, r) for r in registrations)))

    def _refuse_running(self, name: str) -> None:
        existing = {r.name: r for r in read_registrations(self.directory)}.get(name)
        if existing is None:
            return
        if launcher.pid_alive(existing.pid) and launcher.is_vllm_server(existing.pid):
            raise Conflict(
                f"vLLM server {name!r} is already running (pid {existing.pid}, "
                f"{existing.base_url}): stop it first or choose another --name",
                {"name": name},
            )
        log.warning("replacing the stale registration of %s (pid %d is gone)", name, existing.pid)
        remove_registration(self.directory, name)

    def _resolve_model(self, model: str) -> str:
        entry = self._registry.resolve(model)
        if entry is not None:
            return str(entry.path)
        folder = Path(model).expanduser()
        if folder.is_dir():
            return str(folder.resolve())
        raise InvalidRequest(
            f"model {model!r} is neither a registered model nor a folder: "
            f"`memory-service models download {model}` first (servers run offline)",
            {"model": model},
        )


async def _status(http: httpx.AsyncClient, registration: VllmRegistration) -> ServerStatus:
    alive = launcher.pid_alive(registration.pid)
    try:
        response = await http.get(f"{registration.base_url}/health")
        healthy, detail = response.status_code == 200, f"/health {response.status_code}"
    except httpx.TransportError as exc:
        healthy, detail = False, f"/health unreachable: {type(exc).__name__}"
    if not alive:
        detail = f"process {registration.pid} is gone; {detail}"
    return ServerStatus(registration=registration, alive=alive, healthy=healthy, detail=detail)
