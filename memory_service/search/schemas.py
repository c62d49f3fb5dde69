"""Request and response bodies of the search API."""

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from memory_service.memories.schemas import (
    SCORE_DESCRIPTION,
    Explanation,
    MemoryFilters,
    Metadata,
    Namespace,
    SearchMode,
    StrictModel,
    Text,
)

Source = Literal["memories", "documents"]


def _every_source() -> list[Source]:
    return ["memories", "documents"]


class SearchRequest(StrictModel):
    """Search memories and document chunks of a namespace.

    `filters` are the memories' filters. On document chunks only `metadata` (containment in
    the document's metadata) and `created_after` / `created_before` (the document's
    `created_at`) apply; the agent, user, session and tag filters select memories only, and
    chunks are not filtered by them.
    """

    namespace: Namespace
    query: Text
    k: int = Field(10, ge=1, le=100)
    filters: MemoryFilters = Field(default_factory=MemoryFilters)
    mode: SearchMode = "hybrid"
    sources: list[Source] = Field(default_factory=_every_source, min_length=1, max_length=2)
    explain: bool = False
    rrf_k: int | None = Field(
        None, ge=1, le=1_000, description="Reciprocal rank fusion constant; default from settings."
    )


class SearchResult(BaseModel):
    source: Literal["memory", "document"]
    id: str = Field(description="The memory's id, or the chunk's id.")
    content: str = Field(description="The memory's content, or the chunk's text.")
    score: float = Field(description=SCORE_DESCRIPTION)
    metadata: Metadata
    created_at: datetime
    document_id: UUID | None = None
    title: str | None = None
    source_uri: str | None = None
    ordinal: int | None = None
    explain: Explanation | None = None


class SearchResponse(BaseModel):
    results: list[SearchResult]
    mode: SearchMode
    embedding_model: str
