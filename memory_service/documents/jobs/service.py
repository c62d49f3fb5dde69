"""Ingestion-job use cases: submit (validated, queued in one INSERT), get, list.

Submission checks everything a worker would otherwise trip over, so bad input is a 4xx and
no job exists: the count of documents (`limits.max_batch_items`), each text
(`MAX_DOCUMENT_CHARS`), the job's total text (`limits.max_job_chars`), each metadata
(`limits.max_metadata_bytes`), unique source URIs (two documents of one job with the same
identity would overwrite each other), and a server-side path against the allow-list.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core.access import EVERY_NAMESPACE, NOBODY, Actor, Namespaces
from memory_service.core.cursor import check_page_size, decode_cursor, page_of
from memory_service.core.errors import (
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)
from memory_service.core.limits import at_most, metadata_bytes
from memory_service.core.settings import Limits
from memory_service.documents.jobs import repository
from memory_service.documents.jobs.paths import allowed_path
from memory_service.documents.jobs.schemas import (
    DocumentError,
    IngestJobIn,
    IngestJobOut,
    IngestJobPage,
    JobErrors,
    JobProgress,
    JobState,
)
from memory_service.documents.schemas import MAX_DOCUMENT_CHARS, DocumentFields


def default_source_uri(text: str) -> str:
    """A document's identity when the caller gives none: its text's hash."""
    return f"api:sha256:{hashlib.sha256(text.encode()).hexdigest()}"


@dataclass(kw_only=True)
class IngestJobService:
    engine: AsyncEngine
    limits: Limits
    allowed_paths: Sequence[Path]
    max_attempts: int
    # Why this process cannot ingest (no tokenizer for the space), or None when it can.
    unavailable: str | None = None

    async def submit(self, body: IngestJobIn, actor: Actor = NOBODY) -> IngestJobOut:
        if self.unavailable is not None:  # this process's configuration, not the input
            raise ServiceUnavailable(self.unavailable)
        if body.path is not None:
            path = allowed_path(body.path, self.allowed_paths)
            async with self.engine.begin() as conn:
                row = await repository.insert_job(conn, body.namespace, path=str(path), actor=actor)
        else:
            documents = self._checked_documents(body.documents or [])
            async with self.engine.begin() as conn:
                row = await repository.insert_job(
                    conn, body.namespace, documents=documents, actor=actor
                )
        return self.view(row)

    async def get(self, job_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE) -> IngestJobOut:
        """The job, when it is in `namespaces`; NotFound otherwise, as for an unknown id."""
        async with self.engine.connect() as conn:
            row = await repository.get_job(conn, job_id, namespaces)
        if row is None:
            raise NotFound(f"ingestion job {job_id} does not exist", {"id": str(job_id)})
        return self.view(row)

    async def list_jobs(
        self,
        namespace: str | None,
        state: JobState | None,
        limit: int,
        cursor: str | None,
        namespaces: Namespaces = EVERY_NAMESPACE,
    ) -> IngestJobPage:
        """Newest first, of `namespaces` only; `next_cursor` continues after the last job of
        the page."""
        check_page_size(limit, self.limits.max_page_size)
        after = decode_cursor(cursor) if cursor else None
        async with self.engine.connect() as conn:
            rows = await repository.list_jobs(conn, namespace, state, limit + 1, after, namespaces)
        items, next_cursor = page_of([self.view(row) for row in rows], limit)
        return IngestJobPage(items=items, next_cursor=next_cursor)

    def _checked_documents(self, documents: list[DocumentFields]) -> list[dict[str, Any]]:
        """The documents as the job stores them, or the first limit they break."""
        limits = self.limits
        at_most("documents", len(documents), limits.max_batch_items, "documents")
        at_most("text", sum(len(d.text) for d in documents), limits.max_job_chars)
        stored: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for index, document in enumerate(documents):
            at_most("text", len(document.text), MAX_DOCUMENT_CHARS, index=index)
            size = metadata_bytes(document.metadata)
            at_most("metadata", size, limits.max_metadata_bytes, "bytes as JSON", index)
            source_uri = document.source_uri or default_source_uri(document.text)
            if source_uri in seen:
                raise InvalidRequest(
                    f"documents {seen[source_uri]} and {index} have the same source_uri "
                    "(or the same text and none): one would overwrite the other",
                    {"field": "documents", "indexes": [seen[source_uri], index]},
                )
            seen[source_uri] = index
            stored.append({**document.model_dump(), "source_uri": source_uri})
        return stored

    def view(self, row: Row[Any]) -> IngestJobOut:
        job = row._mapping
        failed, errors = job["documents_failed"], job["document_errors"]
        return IngestJobOut(
            **{key: job[key] for key in _VIEW_FIELDS},
            source="documents" if job["path"] is None else "path",
            max_attempts=self.max_attempts,
            progress=JobProgress(
                documents_total=job["documents_total"],
                documents_done=job["documents_ingested"] + job["documents_unchanged"] + failed,
                **{key: job[key] for key in _COUNT_FIELDS},
            ),
            errors=JobErrors(
                documents=[DocumentError.model_validate(error) for error in errors],
                documents_omitted=failed - len(errors),
                last_error=job["last_error"],
            ),
        )


_VIEW_FIELDS = (
    "id",
    "namespace",
    "path",
    "state",
    "attempts",
    "claimed_by",
    "run_after",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "documents_dropped_at",
)
_COUNT_FIELDS = ("documents_ingested", "documents_unchanged", "documents_failed", "chunks")
