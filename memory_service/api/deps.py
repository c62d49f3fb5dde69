"""What a route may depend on: the caller, the service's resources and the services in them.

Every route takes its service through one of these aliases, read from the only state the
app keeps, `app.state.resources` (built by `bootstrap.open_resources`). A service that this
configuration cannot offer answers 503 with the reason, from here.

Every route but `/health` and `/ready` names the scope it needs (`CanRead`, `CanWrite`, ...).
With authentication required, the caller is the API key of `Authorization: Bearer <key>`
(401 without a valid one, 403 without the scope); with it off, the anonymous caller, who
has every scope and every namespace. Namespaces are checked where they are named: a route
that names one the key may not use answers 403, a route by id answers 404 for another
namespace's id, exactly as for an unknown one.
"""

import secrets
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Header, Request

from memory_service.auth.limits import estimated_tokens
from memory_service.auth.service import ANONYMOUS, Principal, Scope
from memory_service.bootstrap import Resources
from memory_service.core.errors import (
    ChatUnavailable,
    Forbidden,
    ServiceUnavailable,
    Unauthorized,
)
from memory_service.documents.jobs.service import IngestJobService
from memory_service.documents.pipeline import Ingestor
from memory_service.gateway.embeddings import EmbeddingsGateway
from memory_service.gateway.service import ChatGateway
from memory_service.memories.service import MemoryService
from memory_service.search.indexes import IndexMaintainer
from memory_service.search.memory_recall import MemoryRecall
from memory_service.search.service import SearchService
from memory_service.serving.errors import AdminDisabled
from memory_service.serving.lifecycle import VllmManager


def resources(request: Request) -> Resources:
    opened: Resources = request.app.state.resources
    return opened


ResourcesDep = Annotated[Resources, Depends(resources)]


async def authenticated(opened: Resources, authorization: str | None) -> Principal:
    """Who `Authorization` stands for (anyone at all while authentication is off); 401
    without a valid key. Charges nothing: `caller` does, once per request."""
    if opened.auth.mode == "off":
        return ANONYMOUS
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("this service needs an API key: send Authorization: Bearer <key>")
    return await opened.auth.keys.authenticate(key.strip())


async def caller(
    opened: ResourcesDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller of this request, charged one request of its key's rate limit."""
    principal = await authenticated(opened, authorization)
    if principal.key_id is not None:
        opened.auth.limits.requests.take(principal.key_id, 1)
    return principal


Caller = Annotated[Principal, Depends(caller)]


class TokenMeter:
    """Charges the texts a request will embed to its key's tokens-per-minute limit, before
    any work is done (429 `rate_limited` when the key is over it)."""

    def __init__(self, opened: ResourcesDep, principal: Caller) -> None:
        self._limits = opened.auth.limits
        self._key = principal.key_id

    def charge(self, texts: Sequence[str]) -> None:
        tokens = estimated_tokens(texts)
        if self._key is not None and tokens > 0:
            self._limits.tokens.take(self._key, tokens)


Meter = Annotated[TokenMeter, Depends()]


def _scoped(scope: Scope) -> Callable[[Principal], Principal]:
    def scoped(principal: Caller) -> Principal:
        principal.require(scope)
        return principal

    return scoped


CanRead = Annotated[Principal, Depends(_scoped("read"))]
CanWrite = Annotated[Principal, Depends(_scoped("write"))]
CanChat = Annotated[Principal, Depends(_scoped("chat"))]
CanEmbed = Annotated[Principal, Depends(_scoped("embed"))]
# Operators' views across tenants (index state, provider health): `metrics`.
CanObserve = Annotated[Principal, Depends(_scoped("metrics"))]
CanAdmin = Annotated[Principal, Depends(_scoped("admin"))]


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


async def _vllm_admin(
    opened: ResourcesDep, authorization: Annotated[str | None, Header()] = None
) -> VllmManager:
    """The vLLM manager, for a caller allowed to start processes (see `api.admin`).

    With authentication required: a key with the `admin` scope on every namespace (`*`),
    or MEMORY_ADMIN_TOKEN (a deprecated alias). With it off: MEMORY_ADMIN_TOKEN only, and
    the routes are disabled without one, so process control never stands open on an
    unauthenticated service."""
    manager = opened.vllm
    token = manager.admin_token
    scheme, _, given = (authorization or "").partition(" ")
    has_token = (
        token is not None
        and scheme.lower() == "bearer"
        and secrets.compare_digest(given.strip().encode(), token.get_secret_value().encode())
    )
    if opened.auth.mode == "required":
        if not has_token:
            principal = await caller(opened, authorization)
            principal.require("admin")
            if not principal.namespaces.everything:
                # Starting processes on the host is not a tenant's to do.
                raise Forbidden(
                    "process control needs an admin key on every namespace ('*')",
                    {"namespaces": "*"},
                )
        return manager
    if token is None:
        raise AdminDisabled("the admin endpoints are disabled: set MEMORY_ADMIN_TOKEN to enable")
    if not has_token:
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
