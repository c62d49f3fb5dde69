"""Request and response bodies of the ingestion-job API."""

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memory_service.documents.schemas import DocumentFields
from memory_service.memories.schemas import Namespace

JobState = Literal["queued", "running", "succeeded", "failed", "dead"]


class IngestJobIn(BaseModel):
    """Either `documents` (inline) or `path` (a file or folder on the server, inside
    `MEMORY_INGEST_ALLOWED_PATHS`), never both."""

    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    documents: list[DocumentFields] | None = Field(None, min_length=1)
    path: str | None = Field(None, min_length=1, max_length=4_096)

    @model_validator(mode="after")
    def _one_source(self) -> "IngestJobIn":
        if (self.documents is None) == (self.path is None):
            raise ValueError("give exactly one of `documents` and `path`")
        return self


class JobProgress(BaseModel):
    """Counts of the current (or last) attempt. A retry runs the whole job again, and the
    documents an earlier attempt committed count as `unchanged` then."""

    documents_total: int | None = Field(
        description="Known at submission for inline jobs, once the folder is walked for paths."
    )
    documents_done: int
    documents_ingested: int
    documents_unchanged: int
    documents_failed: int
    chunks: int


class DocumentError(BaseModel):
    source_uri: str
    error: str


class JobErrors(BaseModel):
    documents: list[DocumentError] = Field(description="Per-document failures, the first ones.")
    documents_omitted: int = Field(description="Failures beyond those listed.")
    last_error: str | None = Field(
        description="The error of the most recent failed attempt; kept after a later attempt "
        "succeeds, so a job that needed retries says why."
    )


class IngestJobOut(BaseModel):
    id: UUID
    namespace: str
    source: Literal["documents", "path"]
    path: str | None
    state: JobState
    attempts: int
    max_attempts: int
    progress: JobProgress
    errors: JobErrors
    claimed_by: str | None
    run_after: datetime
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    documents_dropped_at: datetime | None = Field(
        description="When retention (MEMORY_INGEST_RETENTION_DAYS) dropped the job's inline "
        "documents; the record and its counts stay."
    )


class IngestJobPage(BaseModel):
    items: list[IngestJobOut]
    next_cursor: str | None
