"""HTTP routes of the ingestion-job API. HTTP only: the service does the work."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response, status

from memory_service.api.deps import IngestJobServiceDep
from memory_service.documents.jobs.schemas import IngestJobIn, IngestJobOut, IngestJobPage, JobState
from memory_service.memories.schemas import Namespace

router = APIRouter(prefix="/v1/ingest/jobs", tags=["ingestion jobs"])


@router.post("", response_model=IngestJobOut, status_code=status.HTTP_202_ACCEPTED)
async def submit_job(
    body: IngestJobIn, service: IngestJobServiceDep, request: Request, response: Response
) -> IngestJobOut:
    """Queue documents (inline, or a server-side path) for ingestion; poll the Location."""
    job = await service.submit(body)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id).path)
    return job


@router.get("/{job_id}", response_model=IngestJobOut)
async def get_job(job_id: UUID, service: IngestJobServiceDep) -> IngestJobOut:
    """A job's state, progress counts, errors and timestamps."""
    return await service.get(job_id)


@router.get("", response_model=IngestJobPage)
async def list_jobs(
    service: IngestJobServiceDep,
    namespace: Annotated[Namespace | None, Query()] = None,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> IngestJobPage:
    """List jobs newest first; pass `next_cursor` back as `cursor` for the next page."""
    return await service.list_jobs(namespace, state, limit, cursor)
