"""The MCP tools: their arguments (the REST request models, `namespace` optional), their
descriptions, and what each sends to the REST API (see the package's docstring)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, ValidationError

from memory_service.client import AsyncMemoryClient, Call
from memory_service.memories.repository import filter_clauses
from memory_service.memories.schemas import (
    MemoryFilters,
    MemoryIn,
    MemoryPatch,
    MemorySearch,
    Namespace,
)

# What recall returns of each memory: enough for a model to use and cite it.
RECALLED = ("id", "content", "score", "tags", "metadata", "created_at")


class _OptionalNamespace(BaseModel):
    namespace: Namespace | None = Field(
        None, description="Namespace to use; your key's default namespace when left out."
    )


class RememberArgs(_OptionalNamespace, MemoryIn):
    pass


class RecallArgs(_OptionalNamespace, MemorySearch):
    pass


class GetArgs(BaseModel):
    id: UUID = Field(description="The memory's id.")


class ListArgs(_OptionalNamespace):
    limit: int = Field(20, ge=1, le=200, description="Memories per page, newest first.")
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")


class UpdateArgs(MemoryPatch):
    id: UUID = Field(description="The memory's id.")


class ForgetArgs(_OptionalNamespace):
    id: UUID | None = Field(None, description="Forget this one memory.")
    filters: MemoryFilters | None = Field(
        None,
        description="Forget every memory of the namespace that matches; `{}` forgets the "
        "whole namespace and then needs `namespace` named explicitly.",
    )


class SearchDocumentsArgs(_OptionalNamespace):
    query: str = Field(description="What to look for, in words.")
    k: int = Field(10, ge=1, le=100)
    mode: str = Field("hybrid", description="vector, keyword or hybrid (both, fused).")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[BaseModel]
    run: Callable[["ToolCall"], Awaitable[dict[str, Any]]]
    read_only: bool


class ToolError(Exception):
    """A refusal made here (no namespace to use), shaped like an API error body."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.body = {"error": {"type": type_, "message": message, "details": None}}


@dataclass
class ToolCall:
    client: AsyncMemoryClient
    arguments: dict[str, Any]
    # The default namespace of the caller, asked only when a call names none.
    default_namespace: Callable[[], Awaitable[str | None]]

    async def namespace(self, *, explicit: bool = False) -> str:
        """The call's namespace, else the caller's default namespace."""
        named = self.arguments.pop("namespace", None)
        if named is not None:
            return str(named)
        if explicit:
            raise ToolError("invalid_request", "name the namespace to forget all of it")
        default = await self.default_namespace()
        if default is None:
            raise ToolError(
                "invalid_request",
                "name a namespace: this key has no default namespace "
                "(`keys create --default-namespace`; with authentication off, "
                "MEMORY_MCP_DEFAULT_NAMESPACE)",
            )
        return default

    def memory_path(self) -> str:
        """`/v1/memories/{id}` of the call's `id`, which must be a UUID: it goes into a
        path, where `../admin/keys` would reach another route."""
        try:
            return f"/v1/memories/{UUID(str(self.arguments.pop('id', None)))}"
        except ValueError:
            raise ToolError("validation_error", "`id` must be a memory id (a UUID)") from None

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.client.send(Call("POST", path, None, body))


async def _remember(call: ToolCall) -> dict[str, Any]:
    body = {**call.arguments, "namespace": await call.namespace()}
    stored = await call.post("/v1/memories", body)
    return {key: stored[key] for key in ("id", "status", "created")}


async def _recall(call: ToolCall) -> dict[str, Any]:
    body = {**call.arguments, "namespace": await call.namespace()}
    found = await call.post("/v1/memories/search", body)
    return {"memories": [{key: hit.get(key) for key in RECALLED} for hit in found["results"]]}


async def _get(call: ToolCall) -> dict[str, Any]:
    memory: dict[str, Any] = await call.client.send(Call("GET", call.memory_path(), None))
    return memory


async def _list(call: ToolCall) -> dict[str, Any]:
    params = {k: v for k, v in call.arguments.items() if k in ("limit", "cursor") and v is not None}
    params["namespace"] = await call.namespace()
    page: dict[str, Any] = await call.client.send(Call("GET", "/v1/memories", None, params=params))
    return page


async def _update(call: ToolCall) -> dict[str, Any]:
    path = call.memory_path()
    memory: dict[str, Any] = await call.client.send(Call("PATCH", path, None, call.arguments))
    return memory


def _matches_everything(filters: Any) -> bool:
    """Whether `filters` select every memory of a namespace, by the rule the forget route
    applies (`repository.filter_clauses`: a condition given empty is none). Filters the
    route will refuse anyway do not count."""
    try:
        parsed = MemoryFilters.model_validate(filters)
    except ValidationError:
        return False
    return len(filter_clauses("", parsed)) == 1


async def _forget(call: ToolCall) -> dict[str, Any]:
    given_id = call.arguments.get("id") is not None
    filters = call.arguments.pop("filters", None)
    if given_id == (filters is not None):
        raise ToolError("invalid_request", "give either `id` or `filters`, not both or neither")
    if given_id:
        await call.client.send(Call("DELETE", call.memory_path(), None))
        return {"deleted": 1}
    namespace = await call.namespace(explicit=_matches_everything(filters))
    forgotten: dict[str, Any] = await call.post(
        "/v1/memories/forget", {"namespace": namespace, "filters": filters}
    )
    return forgotten


async def _search_documents(call: ToolCall) -> dict[str, Any]:
    body = {**call.arguments, "namespace": await call.namespace(), "sources": ["documents"]}
    found = await call.post("/v1/search", body)
    return {"chunks": found["results"]}


TOOLS = (
    Tool(
        "remember",
        "Store one memory: a self-contained fact, preference or event. Storing the same "
        "content again returns the stored memory (created: false). Returns its id and "
        "status (embedded, or pending when the embedder is busy: it is searchable soon).",
        RememberArgs,
        _remember,
        read_only=False,
    ),
    Tool(
        "recall",
        "Find memories by meaning: the k closest to the query, best first, with scores "
        "(cosine similarity in vector mode). Filters narrow by tags, metadata, agent, user, "
        "session or time.",
        RecallArgs,
        _recall,
        read_only=True,
    ),
    Tool("get_memory", "Read one memory by id.", GetArgs, _get, read_only=True),
    Tool(
        "list_memories",
        "List a namespace's memories, newest first; pass `next_cursor` back for more.",
        ListArgs,
        _list,
        read_only=True,
    ),
    Tool(
        "update_memory",
        "Change fields of a memory by id; a new content is embedded again.",
        UpdateArgs,
        _update,
        read_only=False,
    ),
    Tool(
        "forget",
        "Delete one memory by id, or every memory of a namespace matching filters; says "
        "how many were deleted.",
        ForgetArgs,
        _forget,
        read_only=False,
    ),
    Tool(
        "search_documents",
        "Search ingested documents: the k best chunks for the query, each with its "
        "document's source and title.",
        SearchDocumentsArgs,
        _search_documents,
        read_only=True,
    ),
)
