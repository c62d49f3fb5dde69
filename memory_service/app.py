"""The app factory: the resources (`bootstrap.open_resources`) wired into FastAPI.

`create_app` installs the error handlers and the routers, keeps the resources as the app's
only state, and runs the background tasks the settings ask for in the lifespan: the
reconciler, the index maintainer, the recall sampler, the provider probes, the vLLM
registrations watcher and the ingestion-job worker. Every request body meets the input
contract first (`InputContract`: a size limit while reading, and `core/input.py`); while
authentication is off, requests whose `Host` is not allowed are refused (`AllowedHosts`).
`/mcp` serves the MCP tools (`mcp_server`) over streamable HTTP, behind the same key check.
"""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory_service import mcp_server
from memory_service.api import router
from memory_service.api.deps import authenticated
from memory_service.bootstrap import Resources
from memory_service.core.handlers import error_response, install_error_handlers
from memory_service.core.input import InvalidValue, check_json
from memory_service.core.settings import Settings
from memory_service.core.telemetry import RequestTelemetry
from memory_service.documents.jobs.worker import job_worker
from memory_service.serving.refresh import watch_registrations


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = [asyncio.create_task(task) for task in _background(settings, resources)]
        try:
            async with mcp_server.sessions_running(mcp_sessions):
                yield
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="memory-service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.resources = resources
    install_error_handlers(app)
    app.add_middleware(InputContract, max_bytes=settings.limits.max_body_bytes)
    if resources.auth.mode == "off":
        app.add_middleware(AllowedHosts, hosts=resources.auth.allowed_hosts)
    app.add_middleware(RequestTelemetry)  # added last: it runs first, and sees every answer
    app.include_router(router)
    calls = mcp_server.in_process(app, in_process_host(resources.auth.allowed_hosts))
    mcp = mcp_server.build_server(calls, settings.mcp_default_namespace)
    mcp_sessions = mcp_server.session_manager(mcp)
    endpoint = mcp_server.HttpEndpoint(mcp_sessions, functools.partial(authenticated, resources))
    app.router.routes.append(Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"]))
    return app


def in_process_host(allowed: frozenset[str]) -> str:
    """The Host of requests the app sends itself (MCP tool calls): one it allows."""
    return "localhost" if "localhost" in allowed or not allowed else sorted(allowed)[0]


class AllowedHosts:
    """Refuse (400 `invalid_host`) a request whose `Host` header is not one of `hosts`.

    A web page can make a browser send requests to a name it controls that resolves to
    127.0.0.1 (DNS rebinding); the browser then sends that name as `Host`. With no key to
    ask for, the Host header is what tells such a request from the user's own tools."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = _host_of(Headers(scope=scope).get("host", ""))
            if host not in self.hosts:
                response = error_response(
                    400,
                    "invalid_host",
                    f"Host {host!r} is not allowed: set MEMORY_ALLOWED_HOSTS, or use a key "
                    "(MEMORY_AUTH=required)",
                    {"allowed": sorted(self.hosts)},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class InputContract:
    """Read a request's body whole, refusing it (413 `payload_too_large`) as soon as it
    passes `max_bytes`, then refuse a JSON body that breaks the input contract (422
    `invalid_value`, `core/input.py`), before any route parses it. Large bodies are checked
    off the event loop."""

    METHODS = frozenset({"POST", "PUT", "PATCH"})
    OFF_LOOP_BYTES = 1024 * 1024

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if headers.get("content-type", "").split(";")[0].strip().endswith("json"):
            try:
                if len(body) > self.OFF_LOOP_BYTES:
                    await asyncio.to_thread(check_json, body)
                else:
                    check_json(body)
            except InvalidValue as exc:
                response = error_response(
                    422, "invalid_value", str(exc), {"field": exc.field, "reason": exc.reason}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is over {self.max_bytes} bytes (MEMORY_LIMITS__MAX_BODY_BYTES)",
            {"limit": self.max_bytes},
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the app the body read already, then the client's own messages
    (a disconnect, for a streamed answer to notice)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _host_of(header: str) -> str:
    """The host of a Host header, without its port: `[::1]:8080` is `[::1]`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _background(settings: Settings, resources: Resources) -> list[Coroutine[Any, Any, object]]:
    tasks: list[Coroutine[Any, Any, object]] = []
    if settings.reconciler:
        tasks.append(resources.reconciler.run_forever(settings.reconcile_interval_seconds))
    if settings.index_maintainer:
        tasks.append(resources.indexes.run_forever(settings.index_interval_seconds))
    if settings.recall_sample_rate > 0:
        tasks.append(resources.sampler.run_forever())
    if resources.providers is not None:
        tasks.append(resources.providers.run_forever(settings.probe_interval_seconds))
        # Servers started by `vllm serve` join the registries (see serving/refresh.py).
        tasks.append(watch_registrations(settings, resources.providers, resources.space))
    if settings.ingest_worker and resources.documents is not None:
        tasks.append(job_worker(settings, resources.engine, resources.documents).run())
    return tasks
