"""The service's HTTP app over in-process ASGI, its lifespan running: what tests talk to."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn

from memory_service.app import create_app
from memory_service.bootstrap import Resources
from memory_service.core.settings import Settings


@contextlib.asynccontextmanager
async def http_app(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, resources)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as http,
    ):
        yield http


@contextlib.asynccontextmanager
async def served_app(settings: Settings, resources: Resources) -> AsyncIterator[str]:
    """The service's app on a real socket (uvicorn in this event loop): its base URL.

    For clients that must see the wire as it is, streamed responses chunk by chunk
    (httpx's ASGITransport buffers a response whole)."""
    app = create_app(settings, resources)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
