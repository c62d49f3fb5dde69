"""The escalation policy: which chat providers a request tries, in which order, and why.

Inputs: the requested model (an alias, a served name, or `auto`), an explicit tier hint (the
`X-Memory-Tier` header, else `metadata.tier`; `local`, `cloud` or `auto`), the request's
estimated size (prompt tokens + requested completion tokens) and provider health (the registry's
ranking, which already excludes unconfigured, unanswered and open-circuit providers).

- `local`: live local providers whose context window fits, best first. Nothing else: a caller
  who pins local (privacy, cost) is never escalated; 503 when none can serve.
- `cloud`: live cloud providers that fit, best first.
- `auto` (the default): the local ones that fit, then the cloud ones as escalation should all
  local attempts fail. With no local provider live, or none large enough for the request, the
  request escalates to cloud at once. The reason says which case applied.

Sizes are estimates (there is no tokenizer for arbitrary chat models here): four characters
per token plus four tokens per message, the usual rule of thumb for English text with
chat-template overhead. They decide routing and reserve budget; providers report true usage.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memory_service.core.errors import ChatUnavailable, InvalidRequest, NotFound
from memory_service.gateway.schemas import ChatCompletionRequest
from memory_service.providers.config import ChatProviderConfig
from memory_service.providers.registry import ChatProvider, Registry

TIERS = ("local", "cloud", "auto")
AUTO = "auto"


@dataclass(frozen=True)
class RoutePlan:
    candidates: list[ChatProvider]
    reason: str


def aliases(configs: Iterable[ChatProviderConfig]) -> dict[str, list[str]]:
    """Every model name a client may ask for, mapped to the providers that serve it:
    each provider's served name and its aliases, and `auto` for all of them."""
    table: dict[str, list[str]] = {AUTO: []}
    for config in configs:
        table[AUTO].append(config.name)
        for name in dict.fromkeys([config.model, *config.aliases]):
            table.setdefault(name, []).append(config.name)
    return table


@dataclass(frozen=True)
class Size:
    """A chat request's estimated size in tokens: its prompt, and the completion it may
    produce (what it asked for, or the default)."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 2
    for message in messages:
        total += 4 + math.ceil(len(message_text(message.get("content"))) / 4)
    return total


def tier_hint(header: str | None, metadata: Any) -> tuple[str, str]:
    """(tier, where it came from); InvalidRequest for a value that is not a tier."""
    if header is not None:
        return _checked(header.strip().lower(), "X-Memory-Tier header"), "X-Memory-Tier header"
    if isinstance(metadata, Mapping) and metadata.get("tier") is not None:
        value = metadata["tier"]
        if not isinstance(value, str):
            raise InvalidRequest("metadata.tier must be a string", {"allowed": list(TIERS)})
        return _checked(value.strip().lower(), "metadata.tier"), "metadata.tier"
    return AUTO, "default"


def plan_route(
    registry: Registry[ChatProvider],
    table: Mapping[str, list[str]],
    model: str,
    tier: str,
    needed_tokens: int,
) -> RoutePlan:
    names = table.get(model)
    if not names:
        raise NotFound(f"model {model!r} is not served here", {"models": sorted(table)})
    pool = [p for p in registry.providers if p.name in names]
    local = _fitting(registry.ranked(lambda p: p.tier == "local"), names, needed_tokens)
    cloud = _fitting(registry.ranked(lambda p: p.tier == "cloud"), names, needed_tokens)
    size = f"~{needed_tokens} tokens"
    if tier != AUTO:  # pinned: that tier only, never escalated
        pinned = local if tier == "local" else cloud
        if pinned:
            return RoutePlan(pinned, f"tier {tier} requested; {pinned[0].name} fits {size}")
        raise ChatUnavailable(
            f"tier {tier} requested, but {_why_not(registry, pool, tier, needed_tokens)}",
            {"providers": _reasons(registry, pool)},
        )
    if local:
        return RoutePlan(local + cloud, f"auto: local {local[0].name} is live and fits {size}")
    why = _why_not(registry, pool, "local", needed_tokens)
    if cloud:
        return RoutePlan(cloud, f"escalated to cloud: {why}")
    raise ChatUnavailable(
        f"{why}, and {_why_not(registry, pool, 'cloud', needed_tokens)}",
        {"providers": _reasons(registry, pool)},
    )


def _fitting(
    ranked: list[ChatProvider], names: list[str], needed_tokens: int
) -> list[ChatProvider]:
    return [p for p in ranked if p.name in names and p.config.context_window >= needed_tokens]


def _why_not(
    registry: Registry[ChatProvider], pool: list[ChatProvider], tier: str, needed_tokens: int
) -> str:
    of_tier = [p for p in pool if p.tier == tier]
    if not of_tier:
        return f"no {tier} provider serves this model"
    live = [p for p in of_tier if registry.ineligibility(p) is None]
    if not live:
        return f"no {tier} provider is available"
    largest = max(p.config.context_window for p in live)
    return f"~{needed_tokens} tokens exceed the {tier} context windows (largest {largest})"


def _reasons(registry: Registry[ChatProvider], pool: list[ChatProvider]) -> dict[str, str]:
    return {p.name: registry.ineligibility(p) or "eligible" for p in pool}


def _checked(value: str, source: str) -> str:
    if value not in TIERS:
        raise InvalidRequest(
            f"{source} must be one of {', '.join(TIERS)}, not {value!r}", {"allowed": list(TIERS)}
        )
    return value


def recall_query(request: ChatCompletionRequest) -> str:
    """What memory recall searches with: `memory.query`, else the last user message."""
    if request.memory is not None and request.memory.query is not None:
        return request.memory.query
    users = [message for message in request.messages if message.role == "user"]
    return message_text(users[-1].content) if users else ""


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""
