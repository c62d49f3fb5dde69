"""What a route may depend on: the service's resources and the services in them.

Every route takes its service through one of these aliases, read from the only state the
app keeps, `app.state.resources` (built by `bootstrap.open_resources`). A service that this
configuration cannot offer answers 503 with the reason, from here.
"""

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from memory_service.bootstrap import Resources
from memory_service.core.errors import ChatUnavailable, ServiceUnavailable
from memory_service.documents.jobs.service import IngestJobService
from memory_service.documents.pipeline import Ingestor
from memory_service.gateway.embeddings import EmbeddingsGateway
from memory_service.gateway.service import ChatGateway
from memory_service.memories.service import MemoryService
from memory_service.search.indexes import IndexMaintainer
from memory_service.search.memory_recall import MemoryRecall
from memory_service.search.service import SearchService
from memory_service.serving.errors import AdminDisabled, Unauthorized
from memory_service.serving.lifecycle import VllmManager


def resources(request: Request) -> Resources:
    opened: Resources = request.app.state.resources
    return opened


ResourcesDep = Annotated[Resources, Depends(resources)]


def _memories(opened: ResourcesDep) -> MemoryService:
    return opened.memories


def _recall(opened: ResourcesDep) -> MemoryRecall:
    return opened.recall


def _search(opened: ResourcesDep) -> SearchService:
    return opened.search


def _indexes(opened: ResourcesDep) -> IndexMaintainer:
    return opened.indexes


def _ingestor(opened: ResourcesDep) -> Ingestor:
    if opened.documents is None:
        # This process's configuration (no tokenizer for the space), not the input: 503.
        raise ServiceUnavailable(opened.documents_unavailable)
    return opened.documents


def _ingest_jobs(opened: ResourcesDep) -> IngestJobService:
    return opened.ingest_jobs


def _chat(opened: ResourcesDep) -> ChatGateway:
    if opened.chat is None or not opened.chat.registry.providers:
        raise ChatUnavailable("no chat providers are configured (see `chat:` in providers.yaml)")
    return opened.chat


def _embeddings(opened: ResourcesDep) -> EmbeddingsGateway:
    return opened.embeddings_gateway


def _vllm_admin(
    opened: ResourcesDep, authorization: Annotated[str | None, Header()] = None
) -> VllmManager:
    """The vLLM manager, for a request that carries the admin token (see `api.admin`)."""
    manager = opened.vllm
    token = manager.admin_token
    if token is None:
        raise AdminDisabled("the admin endpoints are disabled: set MEMORY_ADMIN_TOKEN to enable")
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("missing or wrong admin token: send Authorization: Bearer <token>")
    return manager


MemoryServiceDep = Annotated[MemoryService, Depends(_memories)]
MemoryRecallDep = Annotated[MemoryRecall, Depends(_recall)]
SearchServiceDep = Annotated[SearchService, Depends(_search)]
IndexMaintainerDep = Annotated[IndexMaintainer, Depends(_indexes)]
IngestorDep = Annotated[Ingestor, Depends(_ingestor)]
IngestJobServiceDep = Annotated[IngestJobService, Depends(_ingest_jobs)]
ChatDep = Annotated[ChatGateway, Depends(_chat)]
EmbeddingsDep = Annotated[EmbeddingsGateway, Depends(_embeddings)]
VllmAdminDep = Annotated[VllmManager, Depends(_vllm_admin)]
