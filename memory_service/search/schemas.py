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


class RecallOut(BaseModel):
    recall: float
    samples: int
    measured_at: datetime


class VectorTableOut(BaseModel):
    """The ANN index of one vector table in a space (see `search/indexes.py`)."""

    table: Literal["memory", "chunk"]
    index_state: Literal["exact", "building", "ready", "rebuilding"] = Field(
        description="exact: no index, searches scan exactly; building: the first index is being "
        "built (searches still exact); ready: the index serves searches; rebuilding: a "
        "replacement is being built (the current index serves meanwhile)."
    )
    index_name: str | None
    method: Literal["diskann", "hnsw"] | None
    rows: int = Field(description="Rows with a vector in this space, counted now.")
    tail_rows: int = Field(
        description="Of those, rows written while a diskann build ran: kept out of the index "
        "so that no write waits for the build, searched exactly meanwhile, and moved into the "
        "index by the pass that built it (what it leaves, by the next pass)."
    )
    rows_at_build: int | None
    built_at: datetime | None
    build_seconds: float | None
    rebuild_requested_at: datetime | None
    last_error: str | None = Field(description="Why the last build failed, if it did.")
    recall: dict[str, RecallOut] = Field(
        description="Recall@k of sampled live searches against an exact scan, by selectivity "
        "class of the search's scope (the share of the space's rows it could return)."
    )


class SpaceOut(BaseModel):
    name: str
    model: str
    dimension: int
    normalized: bool
    tables: list[VectorTableOut]


class SpacesOut(BaseModel):
    spaces: list[SpaceOut]
