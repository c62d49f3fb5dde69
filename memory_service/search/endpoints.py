"""HTTP routes of the search API. HTTP only: the service does the work."""

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from memory_service.embeddings.spaces import list_spaces
from memory_service.search.indexes import IndexMaintainer
from memory_service.search.schemas import (
    SearchRequest,
    SearchResponse,
    SpaceOut,
    SpacesOut,
    VectorTableOut,
)
from memory_service.search.service import SearchService


def get_search_service(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, service: SearchServiceDep) -> SearchResponse:
    """Search memories and document chunks by meaning, keywords (full text) or both (RRF)."""
    return await service.search(body)


spaces_router = APIRouter(prefix="/v1/spaces", tags=["spaces"])


@spaces_router.get("", response_model=SpacesOut)
async def spaces(request: Request) -> SpacesOut:
    """Every embedding space, and per vector table its ANN index state, rows and recall."""
    maintainer: IndexMaintainer = request.app.state.resources.indexes
    listed = []
    for space in await list_spaces(maintainer.engine):
        statuses = await maintainer.for_space(space.id).status()
        tables = [VectorTableOut(**asdict(status)) for status in statuses]
        listed.append(SpaceOut(**asdict(space), tables=tables))
    return SpacesOut(spaces=listed)
