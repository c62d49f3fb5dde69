"""GET /v1/providers: every provider, its state, score and why it is or is not eligible."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from memory_service.discovery import scoring
from memory_service.discovery.chat import ChatProviderStatus
from memory_service.discovery.registry import Discovery, ProviderStatus

router = APIRouter(prefix="/v1/providers", tags=["providers"])


class ProvidersOut(BaseModel):
    space: dict[str, Any]
    best: str | None
    score_formula: str
    providers: list[ProviderStatus]
    chat: list[ChatProviderStatus] = []


@router.get("", response_model=ProvidersOut)
async def list_providers(request: Request) -> ProvidersOut:
    """Provider states, scores and eligibility: embedders of the service's space, and chat."""
    discovery: Discovery | None = request.app.state.resources.discovery
    formula = scoring.FORMULA
    if discovery is None:
        space = request.app.state.resources.space
        return ProvidersOut(space=asdict(space), best=None, score_formula=formula, providers=[])
    best = discovery.best_provider()
    return ProvidersOut(
        space=asdict(discovery.space),
        best=best.name if best else None,
        score_formula=formula,
        providers=discovery.status(),
        chat=discovery.chat.status(),
    )
