"""Admin endpoints for vLLM servers: `GET|POST /v1/admin/vllm`, `DELETE /v1/admin/vllm/{name}`.

Starting processes over HTTP must never be open by default (`deps._vllm_admin`). With API
keys required, a route needs a key with the `admin` scope on every namespace (`*`), or
MEMORY_ADMIN_TOKEN. With keys off, every route answers 403 `admin_disabled` unless
MEMORY_ADMIN_TOKEN is set (at least 16 characters), and then 401 `unauthorized` unless the
request carries `Authorization: Bearer <that token>` (compared in constant time). Either
guards process control on the service's host: serve the service over TLS (or on loopback).

POST waits until the server is healthy (bounded by MEMORY_VLLM_HEALTH_TIMEOUT_SECONDS,
about a minute or two for vLLM on CPU), so the client's read timeout must allow for that.
"""

import asyncio

from fastapi import APIRouter, status

from memory_service.api.deps import VllmAdminDep
from memory_service.serving.registrations import VllmRegistration
from memory_service.serving.schemas import ServeRequest, ServerStatus, StopResult

router = APIRouter(prefix="/v1/admin/vllm", tags=["admin"])


@router.get("", response_model=list[ServerStatus])
async def list_servers(manager: VllmAdminDep) -> list[ServerStatus]:
    """Registered vLLM servers: process alive, health."""
    return await manager.status()


@router.post("", response_model=VllmRegistration, status_code=status.HTTP_201_CREATED)
async def serve_model(body: ServeRequest, manager: VllmAdminDep) -> VllmRegistration:
    """Start a vLLM server, wait until healthy, register it for the provider registries."""
    return await manager.serve(body)


@router.delete("/{name}", response_model=StopResult)
async def stop_server(name: str, manager: VllmAdminDep) -> StopResult:
    """Stop a vLLM server (SIGTERM, then SIGKILL) and remove its registration."""
    return await asyncio.to_thread(manager.stop, name)
