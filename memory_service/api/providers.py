"""GET /v1/providers: every provider, its state, score and why it is or is not eligible."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from memory_service.api.deps import CanObserve, ResourcesDep
from memory_service.providers import scoring
from memory_service.providers.registry import ProviderStatus
from memory_service.providers.schemas import ChatStatusOut, EmbedderStatusOut, ProvidersOut

router = APIRouter(prefix="/v1/providers", tags=["providers"])


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
