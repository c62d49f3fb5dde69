"""The HTTP surface: every route, one module per area, plus liveness and readiness here.

Routes do HTTP only: they take their service through `deps` and call it.
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from memory_service.api.admin import router as admin_vllm_router
from memory_service.api.deps import ResourcesDep
from memory_service.api.documents import router as documents_router
from memory_service.api.ingest_jobs import router as ingest_jobs_router
from memory_service.api.keys import me_router
from memory_service.api.keys import router as keys_router
from memory_service.api.memories import router as memories_router
from memory_service.api.metrics import router as metrics_router
from memory_service.api.openai import router as openai_router
from memory_service.api.providers import router as providers_router
from memory_service.api.search import recall_router, spaces_router
from memory_service.api.search import router as search_router
from memory_service.core.handlers import error_response
from memory_service.operations.readiness import readiness_checks

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
router.include_router(keys_router)
router.include_router(me_router)
router.include_router(metrics_router)


@router.get("/health", tags=["health"])
async def health() -> dict[str, str]:
    """The process is up. Checks nothing else: see /ready."""
    return {"status": "ok"}


@router.get("/ready", tags=["health"], response_model=None)
async def ready(resources: ResourcesDep) -> dict[str, Any] | JSONResponse:
    """Database reachable, schema at head, embedder live; 503 names the failing checks."""
    checks = await readiness_checks(resources)
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        return error_response(
            503, "not_ready", f"not ready: {', '.join(failing)}", {"checks": checks}
        )
    return {"status": "ready", "checks": checks}
