"""The Model Context Protocol server: the service's memory tools for agent hosts.

Built on the official Python SDK (PyPI `mcp`, its low-level `Server`), in two transports:

- **Streamable HTTP** at `/mcp` of the app `serve` runs (`http_route`), stateless and
  answering in JSON, so any replica can take any call. The caller's
  `Authorization: Bearer <key>` is the REST API's; with authentication required, a request
  without a valid key is refused with 401 before any MCP message is read.
- **stdio** (`memory-service mcp`, `run_stdio`): a desktop host launches it as a command,
  against a running service (`--url`) or the embedded default opened in-process.

A tool call is sent to the REST API, in-process over ASGI or to the URL, with the caller's
key (`client.AsyncMemoryClient`). Every rule (scopes, namespaces, limits, validation, rate
limits, audit) is therefore the REST route's own, and an error is the REST error body,
returned as the tool's result with `isError` set; nothing raises through the transport.
Arguments go to the API as the host sent them, so a bad one gets the API's own 422.

Tool schemas are the REST request models' JSON schemas (`memories.schemas`,
`search.schemas`), with `namespace` optional: a call without one uses the key's default
namespace (`keys create --default-namespace`), or with authentication off
`MEMORY_MCP_DEFAULT_NAMESPACE`. `forget` by filters must name its namespace: empty filters
delete a whole namespace, and naming it is the confirmation, as in the REST API.

Written against the SDK's 1.x API (`mcp>=1.26,<2`): 2.x (2026) reworked both the server
and the client classes; the wire protocol hosts speak is the same.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from memory_service.client import ApiError, AsyncMemoryClient, Call
from memory_service.memories.schemas import (
    MemoryFilters,
    MemoryIn,
    MemoryPatch,
    MemorySearch,
    Namespace,
)

log = logging.getLogger(__name__)

SERVER_NAME = "memory-service"
INSTRUCTIONS = (
    "Long-term memory. Call `remember` to store a fact, preference or event worth keeping "
    "(one self-contained statement per call); call `recall` with a question or topic before "
    "answering something that earlier conversations may inform. Memories are scoped to a "
    "namespace; leave it out to use your default one."
)

# What recall returns of each memory: enough for a model to use and cite it.
RECALLED = ("id", "content", "score", "tags", "metadata", "created_at")

# What gives a tool call its client of the API, for the caller of the call: it is given the
# headers of the HTTP request that carried the call (None on stdio).
Connect = Callable[[Mapping[str, str] | None], AbstractAsyncContextManager[AsyncMemoryClient]]


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
    default_namespace: str | None

    async def namespace(self, *, explicit: bool = False) -> str:
        """The call's namespace, else the key's default, else the configured one."""
        named = self.arguments.pop("namespace", None)
        if named is not None:
            return str(named)
        if explicit:
            raise ToolError("invalid_request", "name the namespace to forget all of it")
        me = await self.client.send(Call("GET", "/v1/auth/me", None))
        default = me.get("default_namespace") if isinstance(me, dict) else None
        default = default or self.default_namespace
        if default is None:
            raise ToolError(
                "invalid_request",
                "name a namespace: this key has no default namespace "
                "(`keys create --default-namespace`, or MEMORY_MCP_DEFAULT_NAMESPACE)",
            )
        return str(default)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.client.send(Call("POST", path, None, body))


async def _remember(call: ToolCall) -> dict[str, Any]:
    body = {**call.arguments, "namespace": await call.namespace()}
    stored = await call.post("/v1/memories", body)
    return {key: stored[key] for key in ("id", "status", "created")}


async def _recall(call: ToolCall) -> dict[str, Any]:
    body = {**call.arguments, "namespace": await call.namespace()}
    found = await call.post("/v1/memories/search", body)
    return {
        "memories": [
            {
                key: hit.get(key)
                for key in ("id", "content", "score", "tags", "metadata", "created_at")
            }
            for hit in found["results"]
        ]
    }


async def _get(call: ToolCall) -> dict[str, Any]:
    memory: dict[str, Any] = await call.client.send(
        Call("GET", f"/v1/memories/{call.arguments.get('id')}", None)
    )
    return memory


async def _list(call: ToolCall) -> dict[str, Any]:
    params = {k: v for k, v in call.arguments.items() if k in ("limit", "cursor") and v is not None}
    params["namespace"] = await call.namespace()
    page: dict[str, Any] = await call.client.send(Call("GET", "/v1/memories", None, params=params))
    return page


async def _update(call: ToolCall) -> dict[str, Any]:
    memory_id = call.arguments.pop("id", None)
    memory: dict[str, Any] = await call.client.send(
        Call("PATCH", f"/v1/memories/{memory_id}", None, call.arguments)
    )
    return memory


async def _forget(call: ToolCall) -> dict[str, Any]:
    memory_id = call.arguments.pop("id", None)
    filters = call.arguments.pop("filters", None)
    if (memory_id is None) == (filters is None):
        raise ToolError("invalid_request", "give either `id` or `filters`, not both or neither")
    if memory_id is not None:
        await call.client.send(Call("DELETE", f"/v1/memories/{memory_id}", None))
        return {"deleted": 1}
    namespace = await call.namespace(explicit=not filters)
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
_BY_NAME = {tool.name: tool for tool in TOOLS}


def _error(body: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structuredContent=body,
        isError=True,
    )


def build_server(connect: Connect, default_namespace: str | None) -> Server[Any, Any]:
    """The MCP server; `connect` gives a tool call its API client."""
    server: Server[Any, Any] = Server(SERVER_NAME, instructions=INSTRUCTIONS)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=tool.name,
                description=tool.description,
                inputSchema=tool.arguments.model_json_schema(),
                annotations=types.ToolAnnotations(
                    readOnlyHint=tool.read_only, destructiveHint=tool.name == "forget"
                ),
            )
            for tool in TOOLS
        ]

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        tool = _BY_NAME.get(name)
        if tool is None:
            return _error(ToolError("not_found", f"no tool is named {name!r}").body)
        try:
            headers = getattr(server.request_context.request, "headers", None)
            async with connect(headers) as client:
                return await tool.run(ToolCall(client, dict(arguments), default_namespace))
        except ApiError as exc:
            return _error(
                {"error": {"type": exc.type, "message": exc.message, "details": exc.details}}
            )
        except ToolError as exc:
            return _error(exc.body)
        except httpx.TransportError as exc:  # over stdio, the service at --url did not answer
            return _error(
                ToolError("service_unavailable", f"the service did not answer: {exc}").body
            )
        except Exception:
            log.exception("MCP tool %s failed", name)
            return _error(ToolError("internal_error", f"the {name} tool failed").body)

    return server


def session_manager(server: Server[Any, Any]) -> StreamableHTTPSessionManager:
    """Stateless and JSON-answering. Host checks are the app's own (DNS rebinding is
    refused for every route there), so the SDK's localhost-only default is off."""
    return StreamableHTTPSessionManager(
        app=server,
        json_response=True,
        stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


def in_process(app: ASGIApp, api_key: str | None = None, retries: int = 2) -> Connect:
    """Tool calls sent to `app` itself over ASGI, with the MCP request's own key (over
    HTTP), or `api_key` (over stdio)."""

    @asynccontextmanager
    async def connect(headers: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
        key = api_key
        if headers is not None:
            scheme, _, given = (headers.get("authorization") or "").partition(" ")
            key = given.strip() if scheme.lower() == "bearer" else None
        async with AsyncMemoryClient(
            "http://localhost",
            api_key=key,
            transport=httpx.ASGITransport(app=app),
            max_retries=retries,
            max_retry_wait=5.0,
        ) as client:
            yield client

    return connect


@asynccontextmanager
async def sessions_running(manager: StreamableHTTPSessionManager) -> AsyncIterator[None]:
    """`manager.run()` held by a task of its own, so its task group is entered and left by
    one task whichever tasks open and close the app's lifespan (test fixtures do so from
    two)."""
    ready, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            ready.set()
            await stop.wait()

    holder = asyncio.create_task(hold())
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({holder, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if holder.done():
        holder.result()  # it failed to start: raise why
    try:
        yield
    finally:
        stop.set()
        await holder


class HttpEndpoint:
    """The ASGI endpoint of `/mcp`: the caller's key checked as the REST API checks it
    (`refusal` answers the error response, or None to let the request through), then the
    SDK's transport."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        refusal: Callable[[Scope], Awaitable[Response | None]],
    ) -> None:
        self._manager = manager
        self._refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = await self._refusal(scope)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)


def remote(url: str, api_key: str | None) -> Connect:
    """Tool calls sent to a running service at `url`, with `api_key`."""

    @asynccontextmanager
    async def connect(headers: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
        async with AsyncMemoryClient(url, api_key) as client:
            yield client

    return connect


async def run_stdio(connect: Connect, default_namespace: str | None) -> None:
    """Speak MCP on stdin/stdout until the host closes stdin."""
    from mcp.server.stdio import stdio_server

    server = build_server(connect, default_namespace)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
