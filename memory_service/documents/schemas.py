"""Request and response bodies of the documents API."""

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memory_service.memories.schemas import KeyRef, Metadata, Namespace, Text, audit_fields

# One document's text over HTTP; larger inputs belong to `memory-service ingest` or to a
# job's server-side path.
MAX_DOCUMENT_CHARS = 5_000_000


class DocumentFields(BaseModel):
    """One document's content and identity: what `POST /v1/documents` and each inline
    document of an ingestion job carry."""

    model_config = ConfigDict(extra="forbid")

    text: Text
    source_uri: str | None = Field(
        None,
        min_length=1,
        max_length=2_048,
        description="Identity for re-ingestion; default: `api:sha256:<hash of the text>`.",
    )
    title: str | None = Field(None, max_length=1_024)
    metadata: Metadata = Field(default_factory=dict)


class DocumentIn(DocumentFields):
    namespace: Namespace


class DocumentOut(BaseModel):
    id: UUID
    source_uri: str
    status: Literal["ingested", "unchanged"]
    chunks: int
    created_by: KeyRef | None = Field(None, description="The key that ingested it first.")
    updated_by: KeyRef | None = Field(None, description="The key that ingested it last.")

    _audit = model_validator(mode="before")(audit_fields)
