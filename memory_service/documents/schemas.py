"""Request and response bodies of the documents API."""

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from memory_service.memories.schemas import Metadata, Namespace, Text


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    text: Text
    source_uri: str | None = Field(
        None,
        min_length=1,
        max_length=2_048,
        description="Identity for re-ingestion; default: `api:sha256:<hash of the text>`.",
    )
    title: str | None = Field(None, max_length=1_024)
    metadata: Metadata = Field(default_factory=dict)


class DocumentOut(BaseModel):
    id: UUID
    source_uri: str
    status: Literal["ingested", "unchanged"]
    chunks: int
