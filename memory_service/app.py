"""The app factory and the resources it runs on.

`open_resources` builds everything a running service holds (engine, embedder, embedding
space, services), checking on the way that the schema is at head and that the embedder
matches the recorded space; any refusal is a StartupError raised before the server binds
its port. `create_app` wires those resources into FastAPI and runs the reconciler in the
lifespan.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.api import router
from memory_service.core.db import create_engine, ensure_schema_at_head
from memory_service.core.handlers import install_error_handlers
from memory_service.core.settings import Settings
from memory_service.embeddings.local import LocalProvider
from memory_service.embeddings.provider import EmbeddingProvider
from memory_service.embeddings.spaces import EmbeddingSpace, register_space
from memory_service.memories.reconciler import Reconciler
from memory_service.memories.service import MemoryService

log = logging.getLogger(__name__)


@dataclass
class Resources:
    engine: AsyncEngine
    embedder: EmbeddingProvider
    space: EmbeddingSpace
    memories: MemoryService
    reconciler: Reconciler


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings, embedder: EmbeddingProvider | None = None
) -> AsyncIterator[Resources]:
    """Open what the service runs on; an `embedder` passed in stays owned by the caller."""
    if settings.database_url is None:
        raise RuntimeError("resolve the database URL (embedded or configured) before opening")
    engine = create_engine(settings.database_url, pool_size=settings.pool_size)
    owned: EmbeddingProvider | None = None
    try:
        await ensure_schema_at_head(engine)
        if embedder is None:
            embedder = owned = await LocalProvider.load(
                settings.local_model_path, settings.local_model_id, settings.embed_batch_size
            )
        space = await register_space(
            engine,
            settings.embedding_space,
            embedder.model_id,
            embedder.dimension,
            embedder.normalized,
        )
        yield Resources(
            engine=engine,
            embedder=embedder,
            space=space,
            memories=MemoryService(engine, embedder, space, settings.limits),
            reconciler=Reconciler(
                engine,
                embedder,
                space.id,
                settings.reconcile_batch_size,
                settings.reconcile_max_attempts,
            ),
        )
    finally:
        if owned is not None:
            await owned.aclose()
        await engine.dispose()


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.reconciler:
            yield
            return
        task = asyncio.create_task(
            resources.reconciler.run_forever(settings.reconcile_interval_seconds),
            name="reconciler",
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="memory-service", version="0.1.0", lifespan=lifespan)
    app.state.resources = resources
    app.state.memories = resources.memories
    install_error_handlers(app)
    app.include_router(router)
    return app
