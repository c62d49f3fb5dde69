"""The OpenAI-compatible surface: /v1/chat/completions, /v1/embeddings, /v1/models.

Every chat and embeddings response carries `X-Memory-Provider` (who served it) and, for chat,
`X-Memory-Route-Reason` (why that provider: the policy's decision and any failover).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from memory_service.api.deps import (
    Caller,
    CanChat,
    CanEmbed,
    ChatDep,
    EmbeddingsDep,
    Meter,
    ResourcesDep,
)
from memory_service.core.errors import MemoryServiceError
from memory_service.gateway.policy import recall_query
from memory_service.gateway.schemas import ChatCompletionRequest, EmbeddingsRequest

router = APIRouter(prefix="/v1", tags=["openai"])


TierHeader = Annotated[str | None, Header(alias="X-Memory-Tier")]


class RelayResponse(StreamingResponse):
    """A relayed stream that closes its upstream however the response ends: also when the
    client left before the first byte and the body iterator never started (Starlette then
    never closes it, and the upstream connection would stay checked out)."""

    def __init__(
        self, content: AsyncIterator[bytes], close: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._close()


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: ChatDep,
    caller: CanChat,
    meter: Meter,
    x_memory_tier: TierHeader = None,
) -> JSONResponse | RelayResponse:
    """OpenAI chat completions, routed to a local or cloud provider (SSE when `stream`).
    Memory context (`memory`) needs the `read` scope on its namespace too."""
    if body.memory is not None:
        caller.require("read")
        caller.namespaces.check(body.memory.namespace)
        meter.charge([recall_query(body)])
    try:
        if body.stream:
            stream = await gateway.stream(body, x_memory_tier, caller.allow_cloud)
            assert stream.events is not None and stream.close is not None
            return RelayResponse(
                stream.events,
                stream.close,
                media_type="text/event-stream",
                headers=_headers(stream.provider, stream.reason, stream.memory_ids),
            )
        answer = await gateway.complete(body, x_memory_tier, caller.allow_cloud)
    except MemoryServiceError as exc:
        # Errors say where they were decided too: the refusing provider, or none.
        provider = (exc.details or {}).get("provider") if isinstance(exc.details, dict) else None
        exc.headers = _headers(provider or "none", exc.message, [])
        raise
    return JSONResponse(
        answer.body, headers=_headers(answer.provider, answer.reason, answer.memory_ids)
    )


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingsRequest, gateway: EmbeddingsDep, caller: CanEmbed, meter: Meter
) -> JSONResponse:
    """OpenAI embeddings (float or base64) in the service's embedding space."""
    meter.charge([body.input] if isinstance(body.input, str) else body.input)
    answer = await gateway.embed(body)
    return JSONResponse(answer.body, headers={"X-Memory-Provider": answer.provider})


@router.get("/models")
async def models(resources: ResourcesDep, caller: Caller) -> dict[str, Any]:
    """The model names clients may use, each with the providers and served names behind it
    (any valid key may list them)."""
    data: list[dict[str, Any]] = []
    chat = resources.chat
    if chat is not None:
        served = {p.name: p.config.model for p in chat.registry.providers}
        for alias, names in chat.aliases.items():
            if names:
                providers = [{"provider": n, "model": served[n]} for n in names]
                data.append(_card(alias, "chat", providers))
    gateway = resources.embeddings_gateway
    registries = resources.providers
    embedders = [
        {"provider": p.name, "model": p.client.model_id}
        for p in (registries.embed.providers if registries is not None else [])
        if p.declared.model == gateway.space.model
    ]
    for name in gateway.models:
        data.append(_card(name, "embed", embedders))
    return {"object": "list", "data": data}


def _card(model: str, task: str, providers: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "memory-service",
        "task": task,
        "providers": providers,
    }


def _headers(provider: str, reason: str, memory_ids: list[str]) -> dict[str, str]:
    headers = {"X-Memory-Provider": provider, "X-Memory-Route-Reason": _header_safe(reason)}
    if memory_ids:
        headers["X-Memory-Ids"] = ",".join(memory_ids)
    return headers


def _header_safe(value: str) -> str:
    """HTTP header values are latin-1 and one line; upstream messages may be neither."""
    one_line = " ".join(value.split())
    return one_line.encode("ascii", "replace").decode("ascii")[:1000]
