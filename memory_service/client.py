"""A typed Python client of the service's HTTP API: `MemoryClient` and `AsyncMemoryClient`.

    from memory_service.client import MemoryClient
    from memory_service.memories.schemas import MemoryIn, MemorySearch

    with MemoryClient("http://127.0.0.1:8080", api_key="msk_...") as client:
        client.store(MemoryIn(namespace="agent-1", content="The user prefers window seats."))
        hits = client.search_memories(MemorySearch(namespace="agent-1", query="seating"))

Requests and answers are the API's own pydantic models (`memories.schemas`,
`search.schemas`, `documents.schemas`, `documents.jobs.schemas`,
`providers.schemas`): what the server validates is what the client builds, and nothing
here imports the server's engine, models or torch.

- Every call is described once (`Call`: method, path, body, answer model) and sent by
  either client, so the two cannot drift apart.
- An error answer raises the `ApiError` subclass of its body's `type` (`NotFound`,
  `Forbidden`, `RateLimited`, ...; an unknown type falls back on its status), carrying
  `status`, `type`, `message` and `details`.
- A 503 or 429 is retried up to `max_retries` times, after the answer's `Retry-After`
  (at most `max_retry_wait` seconds; 1 s when absent). Every write of the API may be sent
  again as it was (a stored content is answered with the stored memory), so writes are
  retried too. Lost connections are not retried: whether the write landed is unknown, and
  the caller decides.
- `iter_memories` and `iter_ingest_jobs` follow `next_cursor` to the end.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar
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

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
RETRIED_STATUSES = frozenset({429, 503})


class ApiError(Exception):
    """An error answer of the service: its status and the body's `type`, `message` and
    `details` (the one error shape of the API)."""

    types: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, status: int, type_: str, message: str, details: Any) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.details = details


class BadRequest(ApiError):
    types = frozenset(
        {"invalid_request", "invalid_value", "upstream_rejected", "unsupported_media_type"}
    )


class Unauthorized(ApiError):
    types = frozenset({"unauthorized"})


class Forbidden(ApiError):
    types = frozenset({"forbidden"})


class NotFound(ApiError):
    types = frozenset({"not_found"})


class Conflict(ApiError):
    types = frozenset({"conflict"})


class PayloadTooLarge(ApiError):
    types = frozenset({"payload_too_large"})


class Unprocessable(ApiError):
    """The request was understood and refused: validation, limits, input the model refuses."""

    types = frozenset({"validation_error", "limit_exceeded", "input_too_long", "input_rejected"})


class RateLimited(ApiError):
    types = frozenset({"rate_limited", "budget_exhausted"})


class Unavailable(ApiError):
    """503: the database, the embedder or chat is unavailable, or the service is overloaded."""

    types = frozenset(
        {
            "service_unavailable",
            "database_unavailable",
            "embedder_unavailable",
            "chat_unavailable",
            "overloaded",
        }
    )


class ServerError(ApiError):
    types = frozenset({"internal_error"})


_BY_TYPE = {
    name: kind
    for kind in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        RateLimited,
        Unavailable,
        ServerError,
    )
    for name in kind.types
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def error_of(response: httpx.Response) -> ApiError:
    """The exception for an error answer; a body that is not the API's shape (a proxy's
    page, say) keeps its text as the message."""
    try:
        error = response.json()["error"]
        type_, message, details = str(error["type"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        type_, message, details = "http_error", response.text[:500], None
    kind = _BY_TYPE.get(type_) or _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else BadRequest
    return kind(response.status_code, type_, message, details)


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

    def json(self) -> Any:
        if isinstance(self.body, BaseModel):
            return self.body.model_dump(mode="json", exclude_unset=True)
        return None if self.body is None else dict(self.body)

    def parse(self, response: httpx.Response) -> Any:
        if self.answer is not None:
            return self.answer.model_validate_json(response.content)
        return response.json() if response.content else None


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
        return Call("GET", f"/v1/memories/{memory_id}", MemoryOut)

    @staticmethod
    def list_memories(namespace: str, limit: int, cursor: str | None) -> Call[MemoryPage]:
        params: dict[str, str | int] = {"namespace": namespace, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return Call("GET", "/v1/memories", MemoryPage, params=params)

    @staticmethod
    def update_memory(memory_id: UUID | str, patch: MemoryPatch) -> Call[MemoryOut]:
        return Call("PATCH", f"/v1/memories/{memory_id}", MemoryOut, patch)

    @staticmethod
    def delete_memory(memory_id: UUID | str) -> Call[BaseModel]:
        return Call("DELETE", f"/v1/memories/{memory_id}", None)

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
        return Call("POST", "/v1/ingest/jobs", IngestJobOut, job)

    @staticmethod
    def get_ingest_job(job_id: UUID | str) -> Call[IngestJobOut]:
        return Call("GET", f"/v1/ingest/jobs/{job_id}", IngestJobOut)

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


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def retry_after(response: httpx.Response, ceiling: float) -> float:
    """The wait an answer asks for (`Retry-After` in seconds), within [0, ceiling]."""
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), ceiling)


class _Base:
    def __init__(self, max_retries: int, max_retry_wait: float) -> None:
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    def _answer(self, call: Call[T], response: httpx.Response) -> Any:
        if response.is_success:
            return call.parse(response)
        raise error_of(response)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again (logged); None when the answer stands."""
        if response.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
            return None
        wait = retry_after(response, self.max_retry_wait)
        log.info(
            "%s %s answered %d; retry %d of %d in %.1f s",
            response.request.method,
            response.request.url.path,
            response.status_code,
            attempt + 1,
            self.max_retries,
            wait,
        )
        return wait


class AsyncMemoryClient(_Base):
    """The API over an `httpx.AsyncClient`; `transport` lets a caller serve it in-process
    (`httpx.ASGITransport(app)`). Close it (`async with`, or `aclose`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(max_retries, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> Any:
        """The answer of `call`: its model, or the JSON when it names none."""
        attempt = 0
        while True:
            response = await self._http.request(
                call.method, call.path, json=call.json(), params=dict(call.params)
            )
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return self._answer(call, response)
            attempt += 1
            await asyncio.sleep(wait)

    async def _must(self, call: Call[T]) -> T:
        answer: T = await self.send(call)
        return answer

    async def store(self, memory: MemoryIn) -> MemoryStored:
        return await self._must(Calls.store(memory))

    async def store_batch(self, batch: MemoryBatchIn) -> MemoryBatchOut:
        return await self._must(Calls.store_batch(batch))

    async def get_memory(self, memory_id: UUID | str) -> MemoryOut:
        return await self._must(Calls.get_memory(memory_id))

    async def list_memories(
        self, namespace: str, limit: int = 50, cursor: str | None = None
    ) -> MemoryPage:
        return await self._must(Calls.list_memories(namespace, limit, cursor))

    async def iter_memories(self, namespace: str, page_size: int = 100) -> AsyncIterator[MemoryOut]:
        cursor = None
        while True:
            page = await self.list_memories(namespace, page_size, cursor)
            for memory in page.items:
                yield memory
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def update_memory(self, memory_id: UUID | str, patch: MemoryPatch) -> MemoryOut:
        return await self._must(Calls.update_memory(memory_id, patch))

    async def delete_memory(self, memory_id: UUID | str) -> None:
        await self.send(Calls.delete_memory(memory_id))

    async def forget(self, request: MemoryForget) -> ForgetOut:
        return await self._must(Calls.forget(request))

    async def search_memories(self, request: MemorySearch) -> MemorySearchOut:
        return await self._must(Calls.search_memories(request))

    async def search(self, request: SearchRequest) -> SearchResponse:
        return await self._must(Calls.search(request))

    async def add_document(self, document: DocumentIn) -> DocumentOut:
        return await self._must(Calls.add_document(document))

    async def create_ingest_job(self, job: IngestJobIn) -> IngestJobOut:
        return await self._must(Calls.create_ingest_job(job))

    async def get_ingest_job(self, job_id: UUID | str) -> IngestJobOut:
        return await self._must(Calls.get_ingest_job(job_id))

    async def list_ingest_jobs(
        self,
        namespace: str | None = None,
        state: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IngestJobPage:
        return await self._must(Calls.list_ingest_jobs(namespace, state, limit, cursor))

    async def iter_ingest_jobs(
        self, namespace: str | None = None, state: str | None = None, page_size: int = 100
    ) -> AsyncIterator[IngestJobOut]:
        cursor = None
        while True:
            page = await self.list_ingest_jobs(namespace, state, page_size, cursor)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def providers(self) -> ProvidersOut:
        return await self._must(Calls.providers())

    async def spaces(self) -> SpacesOut:
        return await self._must(Calls.spaces())


class MemoryClient(_Base):
    """The API over a blocking `httpx.Client`. Close it (`with`, or `close`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(max_retries, max_retry_wait)
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> Any:
        """The answer of `call`: its model, or the JSON when it names none."""
        attempt = 0
        while True:
            response = self._http.request(
                call.method, call.path, json=call.json(), params=dict(call.params)
            )
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return self._answer(call, response)
            attempt += 1
            time.sleep(wait)

    def _must(self, call: Call[T]) -> T:
        answer: T = self.send(call)
        return answer

    def store(self, memory: MemoryIn) -> MemoryStored:
        return self._must(Calls.store(memory))

    def store_batch(self, batch: MemoryBatchIn) -> MemoryBatchOut:
        return self._must(Calls.store_batch(batch))

    def get_memory(self, memory_id: UUID | str) -> MemoryOut:
        return self._must(Calls.get_memory(memory_id))

    def list_memories(
        self, namespace: str, limit: int = 50, cursor: str | None = None
    ) -> MemoryPage:
        return self._must(Calls.list_memories(namespace, limit, cursor))

    def iter_memories(self, namespace: str, page_size: int = 100) -> Iterator[MemoryOut]:
        cursor = None
        while True:
            page = self.list_memories(namespace, page_size, cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def update_memory(self, memory_id: UUID | str, patch: MemoryPatch) -> MemoryOut:
        return self._must(Calls.update_memory(memory_id, patch))

    def delete_memory(self, memory_id: UUID | str) -> None:
        self.send(Calls.delete_memory(memory_id))

    def forget(self, request: MemoryForget) -> ForgetOut:
        return self._must(Calls.forget(request))

    def search_memories(self, request: MemorySearch) -> MemorySearchOut:
        return self._must(Calls.search_memories(request))

    def search(self, request: SearchRequest) -> SearchResponse:
        return self._must(Calls.search(request))

    def add_document(self, document: DocumentIn) -> DocumentOut:
        return self._must(Calls.add_document(document))

    def create_ingest_job(self, job: IngestJobIn) -> IngestJobOut:
        return self._must(Calls.create_ingest_job(job))

    def get_ingest_job(self, job_id: UUID | str) -> IngestJobOut:
        return self._must(Calls.get_ingest_job(job_id))

    def list_ingest_jobs(
        self,
        namespace: str | None = None,
        state: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IngestJobPage:
        return self._must(Calls.list_ingest_jobs(namespace, state, limit, cursor))

    def iter_ingest_jobs(
        self, namespace: str | None = None, state: str | None = None, page_size: int = 100
    ) -> Iterator[IngestJobOut]:
        cursor = None
        while True:
            page = self.list_ingest_jobs(namespace, state, page_size, cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def providers(self) -> ProvidersOut:
        return self._must(Calls.providers())

    def spaces(self) -> SpacesOut:
        return self._must(Calls.spaces())
