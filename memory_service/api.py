"""The HTTP surface: every domain's router, plus liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from memory_service.core.db import current_revision, ping
from memory_service.core.handlers import error_response
from memory_service.core.migrations import head_revision
from memory_service.discovery.endpoints import router as providers_router
from memory_service.documents.endpoints import router as documents_router
from memory_service.documents.jobs.endpoints import router as ingest_jobs_router
from memory_service.embeddings.provider import ProviderError
from memory_service.gateway.endpoints import router as openai_router
from memory_service.memories.endpoints import router as memories_router
from memory_service.search.endpoints import recall_router, spaces_router
from memory_service.search.endpoints import router as search_router
from memory_service.serving.endpoints import router as admin_vllm_router

router = APIRouter()
router.include_router(memories_router)
router.include_router(recall_router)
router.include_router(providers_router)
router.include_router(search_router)
router.include_router(spaces_router)
router.include_router(documents_router)
router.include_router(openai_router)
router.include_router(admin_vllm_router)
router.include_router(ingest_jobs_router)


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    """The process is up. Checks nothing else: see /ready."""
    return {"status": "ok"}


@router.get("/ready", tags=["health"], response_model=None)
async def ready(request: Request) -> dict[str, Any] | JSONResponse:
    """Database reachable, schema at head, embedder live; 503 names the failing checks."""
    resources = request.app.state.resources
    checks: dict[str, str] = {}
    try:
        await ping(resources.engine)
        checks["database"] = "ok"
        current, head = await current_revision(resources.engine), head_revision()
        checks["schema"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["schema"] = "unknown: database unreachable"
    try:
        await resources.embedder.check()
        checks["embedder"] = "ok"
    except ProviderError as exc:
        checks["embedder"] = f"unavailable: {exc}"
    failing = {name: state for name, state in checks.items() if state != "ok"}
    if failing:
        return error_response(
            503, "not_ready", f"not ready: {', '.join(failing)}", {"checks": checks}
        )
    return {"status": "ready", "checks": checks}
