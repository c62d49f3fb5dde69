"""HTTP routes of the search API. HTTP only: the service does the work."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from memory_service.search.schemas import SearchRequest, SearchResponse
from memory_service.search.service import SearchService


def get_search_service(request: Request) -> SearchService:
    service: SearchService = request.app.state.search
    return service


SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, service: SearchServiceDep) -> SearchResponse:
    """Search memories and document chunks by meaning, keywords (BM25) or both (RRF)."""
    return await service.search(body)
