"""The composition root: everything a running service holds, built from its settings.

`open_resources` is made of small builders (database, embedding, search, documents, chat,
serving), each returning what it built or raising a clear StartupError before the server
binds its port: a schema behind head, a configuration that does not match the recorded
space, a providers file or a tokenizer folder that cannot be read. The one thing that is
not a start-up fault is a service without any tokenizer for its model: it runs, and
document ingestion answers 503 saying what to set.

Every entry point (the `serve`, `ingest` and `jobs` commands, the tests, the benchmarks)
opens its resources here; `app.create_app` only wires them into FastAPI.
"""

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.auth import mode as auth_mode
from memory_service.auth.limits import RateLimits
from memory_service.auth.service import KeyService
from memory_service.core.db import create_engine, ensure_schema_at_head
from memory_service.core.errors import InvalidRequest, StartupError
from memory_service.core.settings import Settings
from memory_service.documents.jobs.service import IngestJobService
from memory_service.documents.pipeline import Ingestor
from memory_service.embeddings.batching import CoalescingEmbedder
from memory_service.embeddings.parity import Parity
from memory_service.embeddings.port import ClientEmbedder, Embedder
from memory_service.embeddings.routing import RoutedEmbedder
from memory_service.embeddings.spaces import EmbeddingSpace, register_space
from memory_service.gateway.budget import CloudBudget
from memory_service.gateway.embeddings import EmbeddingsGateway
from memory_service.gateway.service import ChatGateway
from memory_service.memories.reconciler import Reconciler
from memory_service.memories.service import MemoryService
from memory_service.providers.config import HttpEndpointConfig, bundled_default, load_providers
from memory_service.providers.embedding import EmbeddingClient
from memory_service.providers.factory import build_chat_providers, build_embed_providers
from memory_service.providers.local import LocalProvider
from memory_service.providers.registry import ChatTiers, Providers, Registry
from memory_service.providers.tokenizer import FileTokenizer
from memory_service.search.index_repository import resolve_method
from memory_service.search.indexes import IndexMaintainer, IndexPolicy
from memory_service.search.memory_recall import MemoryRecall
from memory_service.search.recall import RecallSampler
from memory_service.search.searcher import Searcher, VectorSettings
from memory_service.search.service import SearchService
from memory_service.serving.lifecycle import VllmManager

S = TypeVar("S", bound=Searcher)


@dataclass(kw_only=True)
class Embedding:
    """The embedders and where they come from.

    `embedder` serves requests (coalesced); `batch_embedder` serves bulk work (reconciler,
    ingestion), which sends large batches of its own. `providers` is None when one fixed
    client was given instead of the registry."""

    space: EmbeddingSpace
    embedder: Embedder
    batch_embedder: Embedder
    providers: Providers | None


@dataclass(kw_only=True)
class Auth:
    """Whether requests need a key (`auth/mode.py`), the keys, the Host headers accepted
    while no key is asked for, and the keys' rate limits (`auth/limits.py`)."""

    mode: auth_mode.Mode
    keys: KeyService
    allowed_hosts: frozenset[str]
    limits: RateLimits


@dataclass(kw_only=True)
class Resources:
    """What a running service holds: the only state its HTTP app keeps."""

    engine: AsyncEngine
    space: EmbeddingSpace
    embedder: Embedder
    batch_embedder: Embedder
    providers: Providers | None
    memories: MemoryService
    recall: MemoryRecall
    search: SearchService
    reconciler: Reconciler
    indexes: IndexMaintainer
    sampler: RecallSampler
    embeddings_gateway: EmbeddingsGateway
    chat: ChatGateway | None
    documents: Ingestor | None
    documents_unavailable: str
    ingest_jobs: IngestJobService
    vllm: VllmManager
    auth: Auth


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    local: LocalProvider | None = None,
    embedder: EmbeddingClient | None = None,
    serving: bool = True,
) -> AsyncIterator[Resources]:
    """Open what the service runs on.

    Embeddings go through the provider registry over the configured providers
    (`settings.providers_file`, or the bundled model alone), with failover and request
    coalescing. `environ` holds the providers' API keys. `local` is an already loaded
    bundled model to reuse. `embedder` replaces the registry with one fixed client: the
    seam the memories tests use to switch an embedder off. Passed-in models stay the
    caller's. `serving` False (the batch commands) skips the check of the auth mode against
    the listening address: such a process listens on nothing.
    """
    mode = (
        auth_mode.resolve(settings.auth, settings.host, settings.auth_allow_open)
        if serving
        else "required"
    )
    async with contextlib.AsyncExitStack() as stack:
        engine = await _open_database(settings, stack)
        if embedder is None:
            embedding = await _open_providers(settings, engine, environ or {}, local, stack)
        else:
            embedding = await _fixed(settings, engine, embedder)
        documents, unavailable = _documents(settings, engine, embedding.batch_embedder)
        recall, search, sampler = await _search(settings, engine, embedding.embedder)
        space = embedding.space
        yield Resources(
            engine=engine,
            space=space,
            embedder=embedding.embedder,
            batch_embedder=embedding.batch_embedder,
            providers=embedding.providers,
            memories=MemoryService(
                engine=engine,
                embedder=embedding.embedder,
                limits=settings.limits,
                inline_embed_seconds=settings.inline_embed_seconds,
            ),
            recall=recall,
            search=search,
            reconciler=Reconciler(
                engine=engine,
                embedder=embedding.batch_embedder,
                space_id=space.id,
                batch_size=settings.reconcile_batch_size,
                max_attempts=settings.reconcile_max_attempts,
            ),
            indexes=IndexMaintainer(
                engine=engine, space_id=space.id, policy=IndexPolicy.of(settings)
            ),
            sampler=sampler,
            embeddings_gateway=EmbeddingsGateway(
                embedding.batch_embedder,
                settings.limits,
                functools.partial(_served_names, embedding.providers, space),
            ),
            chat=_chat(settings, engine, embedding.providers, recall),
            documents=documents,
            documents_unavailable=unavailable,
            ingest_jobs=IngestJobService(
                engine=engine,
                limits=settings.limits,
                allowed_paths=settings.ingest_allowed_paths,
                max_attempts=settings.ingest_max_attempts,
                unavailable=None if documents else unavailable,
            ),
            # Started vLLM servers get a minimal environment picked from this process's
            # (`serving/launcher.child_environment`); `environ` holds API keys only.
            vllm=VllmManager(settings, os.environ),
            auth=Auth(
                mode=mode,
                keys=KeyService(engine=engine),
                allowed_hosts=frozenset(host.lower() for host in settings.allowed_hosts),
                limits=RateLimits.per_minute(
                    settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute
                ),
            ),
        )


async def _open_database(settings: Settings, stack: contextlib.AsyncExitStack) -> AsyncEngine:
    """The engine, once the schema is known to be at head."""
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
    stack.push_async_callback(engine.dispose)
    await ensure_schema_at_head(engine)
    return engine


async def _open_providers(
    settings: Settings,
    engine: AsyncEngine,
    environ: Mapping[str, str],
    local: LocalProvider | None,
    stack: contextlib.AsyncExitStack,
) -> Embedding:
    """The provider registries, probed once, and the embedders routed over them."""
    default = None
    if settings.providers_file is None:
        # The embedded default: the local model alone, its space described by the model.
        if local is None or settings.local_model_path or settings.local_model_id:
            local = await LocalProvider.load(
                settings.local_model_path,
                settings.local_model_id,
                settings.embed_batch_size,
                settings.model_threads,
            )
            stack.push_async_callback(local.aclose)
        default = bundled_default(
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
    embedders = await build_embed_providers(config, settings.embedding_space, settings, local)
    for provider in embedders:
        if provider.client is not local:
            stack.push_async_callback(provider.client.aclose)
    chat = build_chat_providers(config.chat, settings)
    for chat_provider in chat:
        stack.push_async_callback(chat_provider.client.aclose)
    parity = Parity(space=space, engine=engine, min_cosine=settings.parity_min_cosine)
    providers = Providers(
        embed=Registry(embedders, parity),
        chat=Registry(chat, ChatTiers()),
    )
    await providers.probe_all()
    routed = RoutedEmbedder(providers.embed, space)
    coalesced = CoalescingEmbedder(
        routed,
        settings.coalesce_window_ms / 1000,
        settings.coalesce_max_batch,
        settings.coalesce_max_in_flight,
        settings.coalesce_max_waiting,
    )
    return Embedding(space=space, embedder=coalesced, batch_embedder=routed, providers=providers)


async def _fixed(settings: Settings, engine: AsyncEngine, client: EmbeddingClient) -> Embedding:
    """One fixed client as the only embedder, its space registered from the client."""
    space = await register_space(
        engine, settings.embedding_space, client.model_id, client.dimension, client.normalized
    )
    embedder = ClientEmbedder(client, space)
    return Embedding(space=space, embedder=embedder, batch_embedder=embedder, providers=None)


async def _search(
    settings: Settings, engine: AsyncEngine, embedder: Embedder
) -> tuple[MemoryRecall, SearchService, RecallSampler]:
    """Memory recall and search, sharing their vector settings and recall sampler."""
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
        space_id=embedder.space.id,
        rate=settings.recall_sample_rate,
        max_per_minute=settings.recall_max_per_minute,
        target=settings.recall_target,
    )

    def searcher(kind: type[S]) -> S:
        return kind(
            engine=engine,
            embedder=embedder,
            limits=settings.limits,
            rrf_k=settings.rrf_k,
            vector_settings=vector_settings,
            sampler=sampler,
        )

    return searcher(MemoryRecall), searcher(SearchService), sampler


def _documents(
    settings: Settings, engine: AsyncEngine, embedder: Embedder
) -> tuple[Ingestor | None, str]:
    """The ingestor, or why there is none. Chunking needs the space model's tokenizer: a
    local provider's, else the files of `settings.tokenizer_path`, which must then load."""
    tokenizer = None
    if settings.tokenizer_path is not None and embedder.tokenizer() is None:
        try:
            tokenizer = FileTokenizer.load(settings.tokenizer_path)
        except InvalidRequest as exc:
            raise StartupError(f"MEMORY_TOKENIZER_PATH: {exc.message}") from exc
    try:
        ingestor = Ingestor(
            engine=engine,
            embedder=embedder,
            chunk_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            batch_chunks=settings.ingest_batch_chunks,
            tokenizer=tokenizer,
            limits=settings.limits,
        )
    except InvalidRequest as exc:
        return None, exc.message
    return ingestor, ""


def _chat(
    settings: Settings, engine: AsyncEngine, providers: Providers | None, recall: MemoryRecall
) -> ChatGateway | None:
    if providers is None:
        return None
    budget = CloudBudget(
        engine, settings.chat_cloud_daily_requests, settings.chat_cloud_daily_tokens
    )
    return ChatGateway(providers.chat, budget, recall, settings.chat_default_max_tokens)


def _served_names(providers: Providers | None, space: EmbeddingSpace) -> list[str]:
    """The names the space's HTTP providers serve its model as (clients may use them)."""
    if providers is None:
        return []
    return [
        p.config.model
        for p in providers.embed.providers
        if isinstance(p.config, HttpEndpointConfig) and p.declared.model == space.model
    ]
