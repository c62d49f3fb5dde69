"""The Model Context Protocol server: the service's memory tools for agent hosts.

Built on the official Python SDK (PyPI `mcp`, its low-level `Server`), in two transports:

- **Streamable HTTP** at `/mcp` of the app `serve` runs (`HttpEndpoint`), stateless and
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
from typing import Any

import httpx
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from memory_service.auth.service import Principal
from memory_service.client import ApiError, AsyncMemoryClient, Call
from memory_service.core.errors import MemoryServiceError
from memory_service.core.handlers import error_response
from memory_service.mcp_server.tools import TOOLS, ToolCall, ToolError

log = logging.getLogger(__name__)

SERVER_NAME = "memory-service"
INSTRUCTIONS = (
    "Long-term memory. Call `remember` to store a fact, preference or event worth keeping "
    "(one self-contained statement per call); call `recall` with a question or topic before "
    "answering something that earlier conversations may inform. Memories are scoped to a "
    "namespace; leave it out to use your default one."
)

_BY_NAME = {tool.name: tool for tool in TOOLS}

# What gives a tool call its client of the API, for the caller of the call: it is given the
# headers of the HTTP request that carried the call (None on stdio).
Connect = Callable[[Mapping[str, str] | None], AbstractAsyncContextManager[AsyncMemoryClient]]


def _error(body: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structuredContent=body,
        isError=True,
    )


def build_server(connect: Connect, configured_namespace: str | None) -> Server[Any, Any]:
    """The MCP server; `connect` gives a tool call its API client. `configured_namespace`
    is the default namespace of calls with authentication off."""
    server: Server[Any, Any] = Server(SERVER_NAME, instructions=INSTRUCTIONS)
    # Over stdio one key serves the whole process: asked once.
    asked: dict[str, str | None] = {}

    async def default_namespace(
        principal: Principal | None, client: AsyncMemoryClient
    ) -> str | None:
        if principal is not None:  # over HTTP, the request's key (`HttpEndpoint`)
            return configured_namespace if principal.key_id is None else principal.default_namespace
        if "stdio" not in asked:
            me = await client.send(Call("GET", "/v1/auth/me", None))
            off = me["auth"] == "off"
            asked["stdio"] = configured_namespace if off else me["default_namespace"]
        return asked["stdio"]

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=tool.name,
                description=tool.description,
                inputSchema=tool.arguments.model_json_schema(),
                annotations=types.ToolAnnotations(
                    readOnlyHint=tool.read_only, destructiveHint=not tool.read_only
                ),
            )
            for tool in TOOLS
        ]

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        tool = _BY_NAME.get(name)
        if tool is None:
            return _error(ToolError("not_found", f"no tool is named {name!r}").body)
        request = server.request_context.request
        headers = getattr(request, "headers", None)
        principal = getattr(getattr(request, "state", None), "principal", None)
        try:
            async with connect(headers) as client:

                async def default() -> str | None:
                    return await default_namespace(principal, client)

                return await tool.run(ToolCall(client, dict(arguments), default))
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


def in_process(app: ASGIApp, host: str, api_key: str | None = None, retries: int = 2) -> Connect:
    """Tool calls sent to `app` itself over ASGI, as `Host: host` (one the app allows), with
    the MCP request's own key (over HTTP), or `api_key` (over stdio)."""

    @asynccontextmanager
    async def connect(headers: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
        key = api_key
        if headers is not None:
            scheme, _, given = (headers.get("authorization") or "").partition(" ")
            key = given.strip() if scheme.lower() == "bearer" else None
        async with AsyncMemoryClient(
            f"http://{host}",
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
    try:
        await asyncio.wait({holder, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if holder.done():
            holder.result()  # it failed to start: raise why
        yield
    finally:
        waiting.cancel()
        stop.set()
        await holder


class HttpEndpoint:
    """The ASGI endpoint of `/mcp`: the caller's key checked as the REST API checks it
    (`authenticate`: the principal, or the API's error), then the SDK's transport. The
    principal rides in the request's state to the tool calls; the MCP request itself is not
    charged to the key's rate limit, the REST calls its tools make are."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        authenticate: Callable[[str | None], Awaitable[Principal]],
    ) -> None:
        self._manager = manager
        self._authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = await self._authenticate(Headers(scope=scope).get("authorization"))
        except MemoryServiceError as exc:
            details, headers = exc.details, exc.headers or None
            refused = error_response(exc.status_code, exc.error_type, exc.message, details, headers)
            await refused(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._manager.handle_request(scope, receive, send)


def shared(client: AsyncMemoryClient) -> Connect:
    """Every tool call through `client` (a running service's, over stdio), which its owner
    closes."""

    @asynccontextmanager
    async def connect(headers: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
        yield client

    return connect


async def run_stdio(connect: Connect, default_namespace: str | None) -> None:
    """Speak MCP on stdin/stdout until the host closes stdin."""
    from mcp.server.stdio import stdio_server

    server = build_server(connect, default_namespace)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
