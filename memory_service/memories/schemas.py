"""Request and response bodies of the memories API."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from memory_service.core.limits import at_most, metadata_bytes
from memory_service.core.settings import Limits

Namespace = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]


def _storable(value: datetime) -> datetime:
    """A time that is a time in UTC too: PostgreSQL stores `timestamptz` in UTC, and a
    time whose UTC falls outside years 1-9999 cannot be written or compared."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside years 1-9999 once in UTC") from None
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_storable)]
# Content must carry at least one non-space character: a blank text has no meaning to embed.
Text = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]
ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Tag = Annotated[str, StringConstraints(min_length=1)]
Metadata = dict[str, JsonValue]
MemoryStatus = Literal["pending", "embedded", "failed"]
# Search modes, here rather than in `search.schemas` because memory recall has them too.
SearchMode = Literal["vector", "keyword", "hybrid"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryIn(StrictModel):
    namespace: Namespace
    content: Text
    metadata: Metadata = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list)
    agent_id: ScopeId | None = None
    user_id: ScopeId | None = None
    session_id: ScopeId | None = None
    importance: float = Field(0.5, ge=0, le=1)
    expires_at: Timestamp | None = None


class MemoryBatchIn(StrictModel):
    items: list[MemoryIn] = Field(min_length=1, max_length=1_000)


class MemoryPatch(StrictModel):
    """Fields present replace the stored ones (metadata and tags whole); `null` clears
    `expires_at` and the scope ids. A content change re-embeds."""

    content: Text | None = None
    metadata: Metadata | None = None
    tags: list[Tag] | None = None
    agent_id: ScopeId | None = None
    user_id: ScopeId | None = None
    session_id: ScopeId | None = None
    importance: float | None = Field(None, ge=0, le=1)
    expires_at: Timestamp | None = None

    @model_validator(mode="after")
    def _not_null(self) -> "MemoryPatch":
        nulled = [
            name
            for name in ("content", "metadata", "tags", "importance")
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null")
        if not self.model_fields_set:
            raise ValueError("the patch changes nothing: give at least one field")
        return self


class MemoryFilters(StrictModel):
    """All given conditions must hold. `metadata` is JSON containment: each key equals its value."""

    agent_id: ScopeId | None = None
    user_id: ScopeId | None = None
    session_id: ScopeId | None = None
    tags_any: list[Tag] | None = None
    tags_all: list[Tag] | None = None
    metadata: Metadata | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None

    def check(self, limits: Limits) -> None:
        """Raise LimitExceeded when a filter is larger than what a stored memory may hold:
        a filter no memory can match is refused, not scanned for."""
        for name in ("tags_any", "tags_all"):
            tags = getattr(self, name) or []
            at_most(f"filters.{name}", len(tags), limits.max_tags, "tags")
            for index, tag in enumerate(tags):
                at_most(f"filters.{name}", len(tag), limits.max_tag_chars, index=index)
        if self.metadata is not None:
            size = metadata_bytes(self.metadata)
            at_most("filters.metadata", size, limits.max_metadata_bytes, "bytes as JSON")


class MemorySearch(StrictModel):
    """Recall memories of a namespace.

    `mode` is `vector` unless given: the behaviour recall had before modes existed, so older
    clients keep their results and the meaning of `score` and `min_score`. `keyword` finds
    pending and failed memories too (their text is committed before any vector exists);
    `vector` reads embedded memories only. `min_score` is a cosine-similarity threshold: in
    hybrid mode a memory under it does not count as a vector match (it may still come
    through keywords); keyword mode has no cosine and refuses it.
    """

    namespace: Namespace
    query: Text
    k: int = Field(10, ge=1, le=100)
    filters: MemoryFilters = Field(default_factory=MemoryFilters)
    mode: SearchMode = "vector"
    min_score: float | None = Field(None, ge=-1, le=1)
    explain: bool = False
    rrf_k: int | None = Field(
        None, ge=1, le=1_000, description="Reciprocal rank fusion constant; default from settings."
    )
    search_list_size: int | None = Field(
        None, ge=10, le=1_000, description="diskann.query_search_list_size for this search."
    )
    rescore: int | None = Field(
        None, ge=0, le=1_000, description="diskann.query_rescore for this search."
    )

    @model_validator(mode="after")
    def _min_score_needs_vectors(self) -> "MemorySearch":
        if self.mode == "keyword" and self.min_score is not None:
            raise ValueError(
                "min_score is a cosine-similarity threshold: use it in vector or hybrid mode"
            )
        return self


class MemoryForget(StrictModel):
    namespace: Namespace
    filters: MemoryFilters = Field(default_factory=MemoryFilters)


class KeyRef(BaseModel):
    """The API key behind a write: its id and its name (as it was then)."""

    id: UUID
    name: str


def audit_fields(data: Any) -> Any:
    """A row's flat audit columns (`created_by_key_id`, ...) as `created_by`/`updated_by`;
    None where no key wrote (authentication off, or rows from before keys)."""
    if not isinstance(data, Mapping) or not any(str(k).endswith("_by_key_id") for k in data):
        return data
    fields = dict(data)
    for action in ("created", "updated"):
        key_id = fields.pop(f"{action}_by_key_id", None)
        name = fields.pop(f"{action}_by_key_name", None)
        if f"{action}_by" not in fields:
            fields[f"{action}_by"] = None if key_id is None else {"id": key_id, "name": name}
    return fields


class MemoryOut(BaseModel):
    id: UUID
    namespace: str
    content: str
    metadata: Metadata
    tags: list[str]
    agent_id: str | None
    user_id: str | None
    session_id: str | None
    importance: float
    expires_at: datetime | None
    status: MemoryStatus
    created_at: datetime
    updated_at: datetime
    embedded_at: datetime | None
    last_error: str | None = Field(
        None, description="Why the last embedding attempt failed, when it did."
    )
    created_by: KeyRef | None = Field(None, description="The key that stored it.")
    updated_by: KeyRef | None = Field(None, description="The key that changed it last.")

    _audit = model_validator(mode="before")(audit_fields)


class MemoryStored(MemoryOut):
    created: bool


class BatchItemOut(BaseModel):
    id: UUID
    status: MemoryStatus
    created: bool


class MemoryBatchOut(BaseModel):
    items: list[BatchItemOut]


class Explanation(BaseModel):
    """Where each mode ranked the result (1 is best); null when that mode did not find it."""

    vector_rank: int | None
    vector_score: float | None
    keyword_rank: int | None
    keyword_score: float | None
    fused_score: float | None


SCORE_DESCRIPTION = (
    "Higher is better: cosine similarity (vector), full-text rank (keyword), "
    "reciprocal rank fusion (hybrid)."
)


class SearchHit(MemoryOut):
    score: float = Field(description=SCORE_DESCRIPTION)
    explain: Explanation | None = None


class MemorySearchOut(BaseModel):
    results: list[SearchHit]
    mode: SearchMode
    embedding_model: str


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None


class ForgetOut(BaseModel):
    deleted: int
