"""`POST|GET /v1/admin/keys`, `DELETE /v1/admin/keys/{id_or_name}`: API keys over HTTP.

For keys with the `admin` scope (anyone while authentication is off, on an allowed Host).
A key never mints more than it holds: the new key's namespace patterns must lie within the
caller's, its scopes among the caller's, and `allow_cloud` only from a caller that has it.
The key itself is in the creation's answer only; listing never shows it.
"""

from dataclasses import asdict
from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from memory_service.api.deps import CanAdmin, ResourcesDep
from memory_service.auth.service import KeyInfo, Principal
from memory_service.core.errors import Forbidden

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    namespaces: list[str] = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=6)
    expires_at: AwareDatetime | None = None
    allow_cloud: bool = False


class KeyOut(BaseModel):
    id: UUID
    name: str
    namespaces: list[str]
    scopes: list[str]
    allow_cloud: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, store it now.")


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, resources: ResourcesDep, caller: CanAdmin) -> KeyCreated:
    """Make a key; its secret is in this answer only."""
    _within(caller, body)
    info, key = await resources.auth.keys.create(
        name=body.name,
        namespaces=body.namespaces,
        scopes=body.scopes,
        expires_at=body.expires_at,
        allow_cloud=body.allow_cloud,
    )
    return KeyCreated(**_out(info).model_dump(), key=key)


@router.get("", response_model=list[KeyOut])
async def list_keys(resources: ResourcesDep, caller: CanAdmin) -> list[KeyOut]:
    """Every key, never its secret."""
    return [_out(info) for info in await resources.auth.keys.list()]


@router.delete("/{id_or_name}", response_model=KeyOut)
async def revoke_key(id_or_name: str, resources: ResourcesDep, caller: CanAdmin) -> KeyOut:
    """Revoke a key: refused by every process from its next request on."""
    return _out(await resources.auth.keys.revoke(id_or_name))


def _within(caller: Principal, body: KeyCreate) -> None:
    """Forbidden unless the new key holds no more than the caller."""
    outside = [p for p in body.namespaces if not caller.namespaces.covers(p)]
    if outside:
        raise Forbidden(
            f"a key cannot grant namespaces beyond its own: {outside}", {"namespaces": outside}
        )
    extra = sorted(set(body.scopes) - caller.scopes)
    if extra:
        raise Forbidden(f"a key cannot grant scopes it lacks: {extra}", {"scopes": extra})
    if body.allow_cloud and not caller.allow_cloud:
        raise Forbidden("a key cannot grant allow_cloud without having it", {"allow_cloud": True})


def _out(info: KeyInfo) -> KeyOut:
    return KeyOut(**asdict(info))
