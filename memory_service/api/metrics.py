"""`GET /metrics`: Prometheus text format, behind the `metrics` scope
(`operations/metrics.py` says what it exports)."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from memory_service.api.deps import CanObserve, ResourcesDep
from memory_service.operations.metrics import scrape

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
async def metrics(resources: ResourcesDep, caller: CanObserve) -> Response:
    """Prometheus metrics of this process and of the database it serves."""
    return Response(await scrape(resources), media_type=CONTENT_TYPE_LATEST)
