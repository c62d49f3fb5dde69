"""Keyset-pagination cursors: an opaque token for the last row of a page, `(created_at, id)`.

Listings order by `(created_at, id)` and continue after the row the cursor names, so a page
never repeats or skips a row that existed when the listing began.
"""

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

from memory_service.core.errors import InvalidRequest
from memory_service.core.limits import at_most


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    payload = json.dumps({"created_at": created_at.isoformat(), "id": str(row_id)})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) a cursor names; 400 `invalid_request` for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(payload["created_at"]), UUID(payload["id"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one this service issued", {"field": "cursor"}) from exc


def check_page_size(limit: int, max_page_size: int) -> None:
    """A page larger than the configured maximum is a 422 `limit_exceeded`, not a shorter page."""
    at_most("limit", limit, max_page_size, "rows")


class Keyed(Protocol):
    """A listed item: what its cursor is made of."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> UUID: ...


Item = TypeVar("Item", bound=Keyed)


def page_of(fetched: Sequence[Item], limit: int) -> tuple[list[Item], str | None]:
    """A page from the rows a listing fetched, `limit + 1` of them at most: the first
    `limit`, and the cursor after the last of those when the extra row shows more follow."""
    items = list(fetched[:limit])
    if len(fetched) <= limit:
        return items, None
    return items, encode_cursor(items[-1].created_at, items[-1].id)
