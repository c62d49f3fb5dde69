"""`AsyncMemoryClient` and `MemoryClient`: the calls of `calls.py` over httpx, with the
retries of the package's docstring."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import httpx

from memory_service.client.calls import Call, Calls, T
from memory_service.client.errors import error_of
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

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def retry_after(response: httpx.Response, ceiling: float) -> float:
    """The wait an answer asks for (`Retry-After` in seconds), within [0, ceiling]."""
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), ceiling)


def _retried(call: Call[T], response: httpx.Response) -> bool:
    if response.status_code == 503:
        return call.repeatable
    return response.status_code == 429 and error_of(response).type == "rate_limited"


class _Base:
    def __init__(self, max_retries: int, max_retry_wait: float) -> None:
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    def _answer(self, call: Call[T], response: httpx.Response) -> Any:
        if response.is_success:
            return call.parse(response)
        raise error_of(response)

    def _retry_wait(self, call: Call[T], response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again (logged); None when the answer stands."""
        if attempt >= self.max_retries or not _retried(call, response):
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
            wait = self._retry_wait(call, response, attempt)
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
            wait = self._retry_wait(call, response, attempt)
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
