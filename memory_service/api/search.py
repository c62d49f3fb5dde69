"""HTTP routes of the search API. HTTP only: the service does the work."""

from dataclasses import asdict

from fastapi import APIRouter

from memory_service.api.deps import (
    CanObserve,
    CanRead,
    IndexMaintainerDep,
    MemoryRecallDep,
    Meter,
    SearchServiceDep,
)
from memory_service.embeddings.spaces import list_spaces
from memory_service.memories.schemas import MemorySearch, MemorySearchOut
from memory_service.search.schemas import (
    SearchRequest,
    SearchResponse,
    SpaceOut,
    SpacesOut,
    VectorTableOut,
)

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.post("", response_model=SearchResponse)
async def search(
    body: SearchRequest, service: SearchServiceDep, caller: CanRead, meter: Meter
) -> SearchResponse:
    """Search memories and document chunks by meaning, keywords (full text) or both (RRF)."""
    caller.namespaces.check(body.namespace)
    if body.mode != "keyword":
        meter.charge([body.query])
    return await service.search(body)


# Memory recall is a search over memories: its route sits under /v1/memories, its code here.
recall_router = APIRouter(prefix="/v1/memories", tags=["memories"])


@recall_router.post("/search", response_model=MemorySearchOut)
async def search_memories(
    body: MemorySearch, recall: MemoryRecallDep, caller: CanRead, meter: Meter
) -> MemorySearchOut:
    """Recall embedded, unexpired memories by meaning (cosine similarity, higher is closer)."""
    caller.namespaces.check(body.namespace)
    if body.mode != "keyword":
        meter.charge([body.query])
    return await recall.search(body)


spaces_router = APIRouter(prefix="/v1/spaces", tags=["spaces"])


@spaces_router.get("", response_model=SpacesOut)
async def spaces(maintainer: IndexMaintainerDep, caller: CanObserve) -> SpacesOut:
    """Every embedding space, and per vector table its ANN index state, rows and recall."""
    listed = []
    for space in await list_spaces(maintainer.engine):
        statuses = await maintainer.for_space(space.id).status()
        tables = [VectorTableOut(**asdict(status)) for status in statuses]
        listed.append(SpaceOut(**asdict(space), tables=tables))
    return SpacesOut(spaces=listed)
