"""Every call of the API, described once (`Call`, `Calls`); both clients send these."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from memory_service.documents.jobs.schemas import IngestJobIn, IngestJobOut, IngestJobPage
from memory_service.documents.schemas import DocumentIn, DocumentOut
from memory_service.memories.schemas import (
    ForgetOut,
    MemoryBatchIn,
    MemoryBatchOut,
    MemoryForget,
    MemoryIn,
    MemoryOut,
    MemoryPage,
    MemoryPatch,
    MemorySearch,
    MemorySearchOut,
    MemoryStored,
)
from memory_service.providers.schemas import ProvidersOut
from memory_service.search.schemas import SearchRequest, SearchResponse, SpacesOut

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, and the model of a successful answer. With no model the
    answer is the decoded JSON (None for an empty body); a body may be a model or, to let
    the server do all validation (the MCP tools), the JSON as given."""

    method: str
    path: str
    answer: type[T] | None
    body: BaseModel | Mapping[str, Any] | None = None
    params: Mapping[str, str | int] = field(default_factory=dict)
    # Whether sending it twice does no harm (retried after a 503).
    repeatable: bool = True

    def json(self) -> Any:
        if isinstance(self.body, BaseModel):
            return self.body.model_dump(mode="json", exclude_unset=True)
        return None if self.body is None else dict(self.body)

    def parse(self, response: httpx.Response) -> Any:
        if self.answer is not None:
            return self.answer.model_validate_json(response.content)
        return response.json() if response.content else None


def _path_id(value: UUID | str) -> UUID:
    """An id that goes into a path: a UUID (ValueError otherwise), so that no id, such as
    one an agent's model made up, can name another route ("../admin/keys")."""
    return value if isinstance(value, UUID) else UUID(value)


class Calls:
    """Every call of the API, once; both clients send these."""

    @staticmethod
    def store(memory: MemoryIn) -> Call[MemoryStored]:
        return Call("POST", "/v1/memories", MemoryStored, memory)

    @staticmethod
    def store_batch(batch: MemoryBatchIn) -> Call[MemoryBatchOut]:
        return Call("POST", "/v1/memories/batch", MemoryBatchOut, batch)

    @staticmethod
    def get_memory(memory_id: UUID | str) -> Call[MemoryOut]:
        return Call("GET", f"/v1/memories/{_path_id(memory_id)}", MemoryOut)

    @staticmethod
    def list_memories(namespace: str, limit: int, cursor: str | None) -> Call[MemoryPage]:
        params: dict[str, str | int] = {"namespace": namespace, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return Call("GET", "/v1/memories", MemoryPage, params=params)

    @staticmethod
    def update_memory(memory_id: UUID | str, patch: MemoryPatch) -> Call[MemoryOut]:
        return Call("PATCH", f"/v1/memories/{_path_id(memory_id)}", MemoryOut, patch)

    @staticmethod
    def delete_memory(memory_id: UUID | str) -> Call[BaseModel]:
        return Call("DELETE", f"/v1/memories/{_path_id(memory_id)}", None)

    @staticmethod
    def forget(request: MemoryForget) -> Call[ForgetOut]:
        return Call("POST", "/v1/memories/forget", ForgetOut, request)

    @staticmethod
    def search_memories(request: MemorySearch) -> Call[MemorySearchOut]:
        return Call("POST", "/v1/memories/search", MemorySearchOut, request)

    @staticmethod
    def search(request: SearchRequest) -> Call[SearchResponse]:
        return Call("POST", "/v1/search", SearchResponse, request)

    @staticmethod
    def add_document(document: DocumentIn) -> Call[DocumentOut]:
        return Call("POST", "/v1/documents", DocumentOut, document)

    @staticmethod
    def create_ingest_job(job: IngestJobIn) -> Call[IngestJobOut]:
        return Call("POST", "/v1/ingest/jobs", IngestJobOut, job, repeatable=False)

    @staticmethod
    def get_ingest_job(job_id: UUID | str) -> Call[IngestJobOut]:
        return Call("GET", f"/v1/ingest/jobs/{_path_id(job_id)}", IngestJobOut)

    @staticmethod
    def list_ingest_jobs(
        namespace: str | None, state: str | None, limit: int, cursor: str | None
    ) -> Call[IngestJobPage]:
        given = {"namespace": namespace, "state": state, "cursor": cursor}
        params: dict[str, str | int] = {k: v for k, v in given.items() if v is not None}
        params["limit"] = limit
        return Call("GET", "/v1/ingest/jobs", IngestJobPage, params=params)

    @staticmethod
    def providers() -> Call[ProvidersOut]:
        return Call("GET", "/v1/providers", ProvidersOut)

    @staticmethod
    def spaces() -> Call[SpacesOut]:
        return Call("GET", "/v1/spaces", SpacesOut)
