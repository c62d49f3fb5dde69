"""HTTP routes of the memories API. HTTP only: the service does the work."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response, status

from memory_service.api.deps import CanRead, CanWrite, MemoryServiceDep, Meter
from memory_service.memories.schemas import (
    BatchItemOut,
    ForgetOut,
    MemoryBatchIn,
    MemoryBatchOut,
    MemoryForget,
    MemoryIn,
    MemoryOut,
    MemoryPage,
    MemoryPatch,
    MemoryStored,
    Namespace,
)

router = APIRouter(prefix="/v1/memories", tags=["memories"])


@router.post("", response_model=MemoryStored, status_code=status.HTTP_201_CREATED)
async def store_memory(
    body: MemoryIn, service: MemoryServiceDep, response: Response, caller: CanWrite, meter: Meter
) -> MemoryStored:
    """Store one memory; identical content in the namespace returns the existing one (200)."""
    caller.namespaces.check(body.namespace)
    meter.charge([body.content])
    (stored,) = await service.store([body], caller.actor)
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return stored


@router.post("/batch", response_model=MemoryBatchOut)
async def store_memories(
    body: MemoryBatchIn, service: MemoryServiceDep, caller: CanWrite, meter: Meter
) -> MemoryBatchOut:
    """Store up to 1000 memories atomically; results in input order. A batch with any item
    in a namespace the key may not write is refused whole."""
    for item in body.items:
        caller.namespaces.check(item.namespace)
    meter.charge([item.content for item in body.items])
    stored = await service.store(body.items, caller.actor)
    return MemoryBatchOut(
        items=[
            BatchItemOut(id=item.id, status=item.status, created=item.created) for item in stored
        ]
    )


@router.post("/forget", response_model=ForgetOut)
async def forget_memories(
    body: MemoryForget, service: MemoryServiceDep, caller: CanWrite
) -> ForgetOut:
    """Delete every memory of the namespace that matches the filters."""
    caller.namespaces.check(body.namespace)
    return ForgetOut(deleted=await service.forget(body.namespace, body.filters))


@router.get("", response_model=MemoryPage)
async def list_memories(
    service: MemoryServiceDep,
    caller: CanRead,
    namespace: Annotated[Namespace, Query()],
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> MemoryPage:
    """List a namespace newest first; pass `next_cursor` back as `cursor` for the next page."""
    caller.namespaces.check(namespace)
    return await service.list(namespace, limit, cursor)


@router.get("/{memory_id}", response_model=MemoryOut)
async def get_memory(memory_id: UUID, service: MemoryServiceDep, caller: CanRead) -> MemoryOut:
    """Fetch one memory."""
    return await service.get(memory_id, caller.namespaces)


@router.patch("/{memory_id}", response_model=MemoryOut)
async def update_memory(
    memory_id: UUID, body: MemoryPatch, service: MemoryServiceDep, caller: CanWrite, meter: Meter
) -> MemoryOut:
    """Change fields of a memory; a content change re-embeds it."""
    if body.content is not None:
        meter.charge([body.content])
    return await service.update(memory_id, body, caller.namespaces, caller.actor)


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_memory(memory_id: UUID, service: MemoryServiceDep, caller: CanWrite) -> Response:
    """Delete one memory."""
    await service.delete(memory_id, caller.namespaces)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
