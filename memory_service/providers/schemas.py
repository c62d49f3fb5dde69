"""The answer of `GET /v1/providers` (shared by the route and the Python client)."""

from typing import Any

from pydantic import BaseModel


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
