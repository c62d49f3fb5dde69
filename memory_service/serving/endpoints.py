"""Admin endpoints for vLLM servers: `GET|POST /v1/admin/vllm`, `DELETE /v1/admin/vllm/{name}`.

Starting processes over HTTP must never be open by default: every route answers 403
`admin_disabled` unless MEMORY_ADMIN_TOKEN is set (at least 16 characters), and then 401
`unauthorized` unless the request carries `Authorization: Bearer <that token>` (compared in
constant time). The token guards process control on the service's host, so serve the
service over TLS (or on loopback) when the token is set.

POST waits until the server is healthy (bounded by MEMORY_VLLM_HEALTH_TIMEOUT_SECONDS,
about a minute or two for vLLM on CPU), so the client's read timeout must allow for that.
"""

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, status

from memory_service.serving.errors import AdminDisabled, Unauthorized
from memory_service.serving.lifecycle import VllmManager
from memory_service.serving.registrations import VllmRegistration
from memory_service.serving.schemas import ServeRequest, ServerStatus, StopResult


def _admin_manager(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> VllmManager:
    manager: VllmManager = request.app.state.vllm
    token = manager.admin_token
    if token is None:
        raise AdminDisabled("the admin endpoints are disabled: set MEMORY_ADMIN_TOKEN to enable")
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("missing or wrong admin token: send Authorization: Bearer <token>")
    return manager


AdminDep = Annotated[VllmManager, Depends(_admin_manager)]
router = APIRouter(prefix="/v1/admin/vllm", tags=["admin"])


@router.get("", response_model=list[ServerStatus])
async def list_servers(manager: AdminDep) -> list[ServerStatus]:
    """Registered vLLM servers: process alive, health."""
    return await manager.status()


@router.post("", response_model=VllmRegistration, status_code=status.HTTP_201_CREATED)
async def serve_model(body: ServeRequest, manager: AdminDep) -> VllmRegistration:
    """Start a vLLM server, wait until healthy, register it with discovery."""
    return await manager.serve(body)


@router.delete("/{name}", response_model=StopResult)
async def stop_server(name: str, manager: AdminDep) -> StopResult:
    """Stop a vLLM server (SIGTERM, then SIGKILL) and remove its registration."""
    return await asyncio.to_thread(manager.stop, name)
