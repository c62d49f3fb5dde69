"""HTTP routes of the ingestion-job API. HTTP only: the service does the work.

A job from a server-side `path` needs the `admin` scope as well as `write`: the allowed
folders are the operator's, shared by every tenant. Server paths (a job's `path`, the
allow-list in a refusal) and worker identities (`claimed_by`, host:pid) are shown to callers
with the `admin` scope only; with authentication off the caller has every scope.
"""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response, status

from memory_service.api.deps import CanRead, CanWrite, IngestJobServiceDep, Meter
from memory_service.auth.service import Principal
from memory_service.documents.jobs.schemas import IngestJobIn, IngestJobOut, IngestJobPage, JobState
from memory_service.memories.schemas import Namespace

router = APIRouter(prefix="/v1/ingest/jobs", tags=["ingestion jobs"])


@router.post("", response_model=IngestJobOut, status_code=status.HTTP_202_ACCEPTED)
async def submit_job(
    body: IngestJobIn,
    service: IngestJobServiceDep,
    request: Request,
    response: Response,
    caller: CanWrite,
    meter: Meter,
) -> IngestJobOut:
    """Queue documents (inline, or a server-side path: `admin` only) for ingestion; poll the
    Location. Inline documents count against the key's token limit when queued; a path's
    files are not metered (their size is unknown until the worker reads them)."""
    caller.namespaces.check(body.namespace)
    if body.path is not None:
        caller.require("admin")
    meter.charge([document.text for document in body.documents or []])
    job = await service.submit(body, caller.actor)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id).path)
    return _shown(caller, job)


@router.get("/{job_id}", response_model=IngestJobOut)
async def get_job(job_id: UUID, service: IngestJobServiceDep, caller: CanRead) -> IngestJobOut:
    """A job's state, progress counts, errors and timestamps."""
    return _shown(caller, await service.get(job_id, caller.namespaces))


@router.get("", response_model=IngestJobPage)
async def list_jobs(
    service: IngestJobServiceDep,
    caller: CanRead,
    namespace: Annotated[Namespace | None, Query()] = None,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> IngestJobPage:
    """List jobs newest first (of the namespaces the key may read); pass `next_cursor` back
    as `cursor` for the next page."""
    if namespace is not None:
        caller.namespaces.check(namespace)
    page = await service.list_jobs(namespace, state, limit, cursor, caller.namespaces)
    return page.model_copy(update={"items": [_shown(caller, job) for job in page.items]})


def _is_admin(caller: Principal) -> bool:
    return "admin" in caller.scopes


def _shown(caller: Principal, job: IngestJobOut) -> IngestJobOut:
    """The job as `caller` may see it: without server paths and worker ids unless admin."""
    if _is_admin(caller):
        return job
    return job.model_copy(update={"path": None, "claimed_by": None})
