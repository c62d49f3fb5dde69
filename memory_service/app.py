"""The app factory: the resources (`bootstrap.open_resources`) wired into FastAPI.

`create_app` installs the error handlers and the routers, keeps the resources as the app's
only state, and runs the background tasks the settings ask for in the lifespan: the
reconciler, the index maintainer, the recall sampler, the provider probes, the vLLM
registrations watcher and the ingestion-job worker.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import FastAPI

from memory_service.api import router
from memory_service.bootstrap import Resources
from memory_service.core.handlers import install_error_handlers
from memory_service.core.settings import Settings
from memory_service.documents.jobs.worker import job_worker
from memory_service.serving.refresh import watch_registrations


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = [asyncio.create_task(task) for task in _background(settings, resources)]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="memory-service", version="0.1.0", lifespan=lifespan)
    app.state.resources = resources
    install_error_handlers(app)
    app.include_router(router)
    return app


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
