"""GET /v1/providers: every provider, its state, score and why it is or is not eligible."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from memory_service.api.deps import CanObserve, ResourcesDep
from memory_service.providers import scoring
from memory_service.providers.registry import ProviderStatus

router = APIRouter(prefix="/v1/providers", tags=["providers"])


class _StatusOut(BaseModel):
    name: str
    kind: str
    model: str
    priority: int
    state: str
    eligible: bool
    reason: str
    score: float | None
    latency_ms: float | None
    error_rate: float
    consecutive_failures: int
    last_error: str | None


class EmbedderStatusOut(_StatusOut):
    space: str
    parity: float | None


class ChatStatusOut(_StatusOut):
    tier: str
    context_window: int


class ProvidersOut(BaseModel):
    space: dict[str, Any]
    best: str | None
    score_formula: str
    providers: list[EmbedderStatusOut]
    chat: list[ChatStatusOut] = []


def _fields(row: ProviderStatus) -> dict[str, Any]:
    fields = asdict(row)
    return {**fields, **fields.pop("details")}


@router.get("", response_model=ProvidersOut)
async def list_providers(resources: ResourcesDep, caller: CanObserve) -> ProvidersOut:
    """Provider states, scores and eligibility: embedders of the service's space, and chat."""
    providers = resources.providers
    space = asdict(resources.space)
    formula = scoring.FORMULA
    if providers is None:
        return ProvidersOut(space=space, best=None, score_formula=formula, providers=[])
    best = providers.embed.best()
    return ProvidersOut(
        space=space,
        best=best.name if best else None,
        score_formula=formula,
        providers=[EmbedderStatusOut(**_fields(row)) for row in providers.embed.status()],
        chat=[ChatStatusOut(**_fields(row)) for row in providers.chat.status()],
    )
