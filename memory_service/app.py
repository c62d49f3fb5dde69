"""The app factory and the resources it runs on.

`open_resources` builds everything a running service holds (engine, providers and
discovery, embedding space, services), checking on the way that the schema is at head and
that the configuration matches the recorded space; any refusal is a StartupError raised
before the server binds its port. `create_app` wires those resources into FastAPI and runs
the reconciler and the discovery probes in the lifespan.
"""

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.api import router
from memory_service.core.db import create_engine, ensure_schema_at_head
from memory_service.core.errors import InvalidRequest
from memory_service.core.handlers import install_error_handlers
from memory_service.core.settings import Settings
from memory_service.discovery.chat import ChatDiscovery, build_chat_providers
from memory_service.discovery.config import (
    HttpProviderConfig,
    embedded_default,
    load_providers,
)
from memory_service.discovery.factory import build_providers
from memory_service.discovery.registry import Discovery
from memory_service.discovery.routing import RoutedEmbedder
from memory_service.documents.jobs.service import IngestJobService
from memory_service.documents.jobs.worker import job_worker
from memory_service.documents.pipeline import Ingestor
from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.embeddings.local import LocalProvider
from memory_service.embeddings.provider import EmbeddingProvider
from memory_service.embeddings.spaces import EmbeddingSpace, register_space
from memory_service.embeddings.tokenizer import FileTokenizer
from memory_service.gateway.budget import CloudBudget
from memory_service.gateway.embeddings import EmbeddingsGateway
from memory_service.gateway.service import ChatGateway
from memory_service.memories.reconciler import Reconciler
from memory_service.memories.service import MemoryService
from memory_service.search.index_repository import resolve_method
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from memory_service.search.memory_recall import MemoryRecall
from memory_service.search.query import VectorSettings
from memory_service.search.recall import RecallSampler
from memory_service.search.service import SearchService
from memory_service.serving.lifecycle import VllmManager
from memory_service.serving.refresh import watch_registrations

log = logging.getLogger(__name__)


@dataclass
class Resources:
    engine: AsyncEngine
    embedder: EmbeddingProvider
    space: EmbeddingSpace
    memories: MemoryService
    recall: MemoryRecall
    search: SearchService
    reconciler: Reconciler
    indexes: IndexMaintainer
    sampler: RecallSampler
    # For bulk work (reconciler, ingestion): large batches of its own, no coalescing.
    batch_embedder: EmbeddingProvider
    embeddings_gateway: EmbeddingsGateway
    discovery: Discovery | None = None
    chat: ChatGateway | None = None
    documents: Ingestor | None = None
    documents_unavailable: str = "document ingestion is not configured"


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    local: LocalProvider | None = None,
    embedder: EmbeddingProvider | None = None,
) -> AsyncIterator[Resources]:
    """Open what the service runs on.

    Embeddings go through discovery over the configured providers (`settings.providers_file`,
    or the bundled model alone), with failover and request coalescing. `local` is an already
    loaded bundled model to reuse. `embedder` replaces discovery with one fixed embedder: the
    seam the memories tests use to switch an embedder off. Passed-in models stay the caller's.
    """
    if settings.database_url is None:
        raise RuntimeError("resolve the database URL (embedded or configured) before opening")
    engine = create_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout_seconds=settings.pool_timeout_seconds,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        lock_timeout_ms=settings.db_lock_timeout_ms,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        await ensure_schema_at_head(engine)
        discovery = None
        # The reconciler sends large batches of its own: it needs no coalescing.
        background_embedder = embedder
        if embedder is None:
            discovery = await _open_discovery(settings, engine, environ or {}, local, stack)
            background_embedder = RoutedEmbedder(discovery)
            embedder = CoalescingEmbedder(
                background_embedder,
                settings.coalesce_window_ms / 1000,
                settings.coalesce_max_batch,
                settings.coalesce_max_in_flight,
            )
            space = discovery.space
        else:
            space = await register_space(
                engine,
                settings.embedding_space,
                embedder.model_id,
                embedder.dimension,
                embedder.normalized,
            )
        documents, unavailable = _documents(
            settings, engine, background_embedder or embedder, space
        )
        async with engine.connect() as conn:
            method = await resolve_method(conn, settings.ann_method)
        vector_settings = VectorSettings(
            settings.diskann_search_list_size,
            settings.diskann_rescore,
            settings.ann_exact_scope_rows,
            method=method,
            ef_search=settings.hnsw_ef_search,
        )
        sampler = RecallSampler(
            engine=engine,
            space_id=space.id,
            rate=settings.recall_sample_rate,
            max_per_minute=settings.recall_max_per_minute,
            target=settings.recall_target,
        )
        recall = MemoryRecall(
            engine=engine,
            embedder=embedder,
            space=space,
            limits=settings.limits,
            rrf_k=settings.rrf_k,
            vector_settings=vector_settings,
            sampler=sampler,
        )
        yield Resources(
            engine=engine,
            embedder=embedder,
            space=space,
            memories=MemoryService(
                engine=engine,
                embedder=embedder,
                space=space,
                limits=settings.limits,
                inline_embed_seconds=settings.inline_embed_seconds,
            ),
            recall=recall,
            search=SearchService(
                engine=engine,
                embedder=embedder,
                space=space,
                limits=settings.limits,
                rrf_k=settings.rrf_k,
                vector_settings=vector_settings,
                sampler=sampler,
            ),
            batch_embedder=background_embedder or embedder,
            reconciler=Reconciler(
                engine=engine,
                embedder=background_embedder or embedder,
                space_id=space.id,
                batch_size=settings.reconcile_batch_size,
                max_attempts=settings.reconcile_max_attempts,
            ),
            indexes=IndexMaintainer(
                engine=engine, space_id=space.id, policy=IndexPolicy.of(settings)
            ),
            sampler=sampler,
            embeddings_gateway=EmbeddingsGateway(
                background_embedder or embedder,
                space,
                settings.limits,
                functools.partial(_served_names, discovery),
            ),
            discovery=discovery,
            chat=None
            if discovery is None
            else ChatGateway(
                discovery.chat,
                CloudBudget(
                    engine, settings.chat_cloud_daily_requests, settings.chat_cloud_daily_tokens
                ),
                recall,
                settings.chat_default_max_tokens,
            ),
            documents=documents,
            documents_unavailable=unavailable,
        )


def _served_names(discovery: Discovery | None) -> list[str]:
    """The names the space's HTTP providers serve its model as (clients may use them)."""
    if discovery is None:
        return []
    return [
        p.config.model
        for p in discovery.providers
        if isinstance(p.config, HttpProviderConfig) and p.declared.model == discovery.space.model
    ]


def _documents(
    settings: Settings, engine: AsyncEngine, embedder: EmbeddingProvider, space: EmbeddingSpace
) -> tuple[Ingestor | None, str]:
    """The ingestor, or why there is none (chunking needs the space model's tokenizer: a
    local provider's, else the files of `settings.tokenizer_path`)."""
    try:
        tokenizer = None
        if settings.tokenizer_path is not None and embedder.tokenizer() is None:
            tokenizer = FileTokenizer.load(settings.tokenizer_path)
        ingestor = Ingestor(
            engine=engine,
            embedder=embedder,
            space=space,
            chunk_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            batch_chunks=settings.ingest_batch_chunks,
            tokenizer=tokenizer,
            limits=settings.limits,
        )
    except InvalidRequest as exc:
        return None, exc.message
    return ingestor, ""


async def _open_discovery(
    settings: Settings,
    engine: AsyncEngine,
    environ: Mapping[str, str],
    local: LocalProvider | None,
    stack: contextlib.AsyncExitStack,
) -> Discovery:
    default = None
    if settings.providers_file is None:
        # The embedded default: the local model alone, its space described by the model.
        if local is None or settings.local_model_path or settings.local_model_id:
            local = await LocalProvider.load(
                settings.local_model_path, settings.local_model_id, settings.embed_batch_size
            )
            stack.push_async_callback(local.aclose)
        default = embedded_default(
            settings.embedding_space,
            local.model_id,
            local.dimension,
            local.normalized,
            settings.local_model_path,
        )
    config = load_providers(
        settings.providers_file, settings.embedding_space, settings.providers, environ, default
    )
    declared = config.spaces[settings.embedding_space]
    space = await register_space(
        engine, settings.embedding_space, declared.model, declared.dimension, declared.normalized
    )
    http = await stack.enter_async_context(
        httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
    )
    providers = await build_providers(config, settings.embedding_space, http, settings, local)
    for provider in providers:
        if provider.client is not local:
            stack.push_async_callback(provider.client.aclose)

    chat = ChatDiscovery(build_chat_providers(config.chat, http, settings))
    discovery = Discovery(
        providers, space, engine, parity_min_cosine=settings.parity_min_cosine, chat=chat
    )
    await discovery.probe_all()
    return discovery


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[Coroutine[Any, Any, object]] = []
        if settings.reconciler:
            tasks.append(resources.reconciler.run_forever(settings.reconcile_interval_seconds))
        if settings.index_maintainer:
            tasks.append(resources.indexes.run_forever(settings.index_interval_seconds))
        if settings.recall_sample_rate > 0:
            tasks.append(resources.sampler.run_forever())
        if resources.discovery is not None:
            tasks.append(resources.discovery.run_forever(settings.probe_interval_seconds))
            # Servers started by `vllm serve` join discovery (see serving/refresh.py).
            tasks.append(watch_registrations(settings, resources.discovery))
        if settings.ingest_worker and resources.documents is not None:
            tasks.append(job_worker(settings, resources.engine, resources.documents).run())
        running = [asyncio.create_task(coroutine) for coroutine in tasks]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="memory-service", version="0.1.0", lifespan=lifespan)
    # What the endpoints read: the resources, and two services of the HTTP layer that the
    # app's own settings configure (the vLLM servers it may start, the job submission).
    app.state.resources = resources
    # The app factory is an entry point: started vLLM servers inherit its environment.
    app.state.vllm = VllmManager(settings, os.environ)
    app.state.ingest_jobs = IngestJobService(
        engine=resources.engine,
        limits=settings.limits,
        allowed_paths=settings.ingest_allowed_paths,
        max_attempts=settings.ingest_max_attempts,
        unavailable=None if resources.documents else resources.documents_unavailable,
    )
    install_error_handlers(app)
    app.include_router(router)
    return app
