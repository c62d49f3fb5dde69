"""Every limit check of the service: one message and one detail shape for all routes.

A value over a configured limit is a 422 `limit_exceeded` whose details are `field`,
`limit`, `actual` and, for an item of a list, its `index`. A text over the embedding
model's token window is a 422 `input_too_long` with `field`, `tokens`, `max_tokens` and
`index` likewise. Nothing is ever truncated to fit.
"""

import json
from typing import Any

from memory_service.core.errors import InputTooLong, LimitExceeded


def at_most(
    field: str, actual: int, limit: int, unit: str = "characters", index: int | None = None
) -> None:
    """Raise LimitExceeded when `actual` is over `limit`."""
    if actual > limit:
        raise LimitExceeded(
            f"{_named(field, index)}: {actual} {unit}, at most {limit}",
            _details(index, field=field, limit=limit, actual=actual),
        )


def within_window(
    field: str,
    tokens: int,
    window: int | None,
    model: str,
    index: int | None = None,
    advice: str = "Split it",
) -> None:
    """Raise InputTooLong when `tokens` is over the model's window; a window of None or 0
    is unknown, and then the embedder itself refuses what it cannot read."""
    if window and tokens > window:
        raise InputTooLong(
            f"{_named(field, index)} is {tokens} tokens long; {model} reads at most {window}. "
            f"{advice}: text is never truncated.",
            _details(index, field=field, tokens=tokens, max_tokens=window),
        )


def metadata_bytes(metadata: dict[str, Any]) -> int:
    """The size `max_metadata_bytes` bounds: UTF-8 bytes of the compact JSON, as stored."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())


def _named(field: str, index: int | None) -> str:
    """`content`, or `content of item 3` for an item of a list."""
    return field if index is None else f"{field} of item {index}"


def _details(index: int | None, **details: Any) -> dict[str, Any]:
    return details if index is None else {"index": index, **details}
