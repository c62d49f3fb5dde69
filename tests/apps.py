"""The service's HTTP app over in-process ASGI, its lifespan running: what tests talk to."""

import contextlib
from collections.abc import AsyncIterator

import httpx

from memory_service.app import Resources, create_app
from memory_service.core.settings import Settings


@contextlib.asynccontextmanager
async def http_app(settings: Settings, resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, resources)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http
