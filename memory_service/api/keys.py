"""`POST|GET /v1/admin/keys`, `DELETE /v1/admin/keys/{id_or_name}`: API keys over HTTP;
`GET /v1/auth/me`: what the caller's own key may do.

For keys with the `admin` scope (anyone while authentication is off, on an allowed Host).
A key never mints more than it holds (`KeyService.create`'s grantor rule), and lists and
revokes only the keys whose namespaces lie within its own; another tenant's key is 404, as
an unknown one. The key itself is in the creation's answer only; listing never shows it.
"""

from dataclasses import asdict
from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from memory_service.api.deps import Caller, CanAdmin, ResourcesDep
from memory_service.auth.service import KeyInfo
from memory_service.memories.schemas import KeyRef, Timestamp

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])
me_router = APIRouter(prefix="/v1/auth", tags=["auth"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    namespaces: list[str] = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=6)
    expires_at: Timestamp | None = None
    allow_cloud: bool = False
    default_namespace: str | None = Field(
        None, max_length=128, description="What MCP calls that name no namespace use."
    )


class KeyOut(BaseModel):
    id: UUID
    name: str
    namespaces: list[str]
    scopes: list[str]
    allow_cloud: bool
    default_namespace: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, store it now.")


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, resources: ResourcesDep, caller: CanAdmin) -> KeyCreated:
    """Make a key; its secret is in this answer only."""
    info, key = await resources.auth.keys.create(
        name=body.name,
        namespaces=body.namespaces,
        scopes=body.scopes,
        expires_at=body.expires_at,
        allow_cloud=body.allow_cloud,
        default_namespace=body.default_namespace,
        grantor=caller,
    )
    return KeyCreated(**_out(info).model_dump(), key=key)


@router.get("", response_model=list[KeyOut])
async def list_keys(resources: ResourcesDep, caller: CanAdmin) -> list[KeyOut]:
    """Every key this key may manage, never its secret."""
    return [_out(info) for info in await resources.auth.keys.list(caller)]


@router.delete("/{id_or_name}", response_model=KeyOut)
async def revoke_key(id_or_name: str, resources: ResourcesDep, caller: CanAdmin) -> KeyOut:
    """Revoke a key: refused by every process from its next request on."""
    return _out(await resources.auth.keys.revoke(id_or_name, caller))


def _out(info: KeyInfo) -> KeyOut:
    return KeyOut(**asdict(info))


class CallerOut(BaseModel):
    auth: str = Field(description="`required`, or `off` (then the caller may do all).")
    key: KeyRef | None = Field(description="The key of this request; null with auth off.")
    scopes: list[str]
    namespaces: list[str]
    default_namespace: str | None
    allow_cloud: bool


@me_router.get("/me", response_model=CallerOut)
async def who_am_i(resources: ResourcesDep, caller: Caller) -> CallerOut:
    """The caller's key: its scopes, namespace patterns and default namespace."""
    key = None
    if caller.key_id is not None and caller.key_name is not None:
        key = KeyRef(id=caller.key_id, name=caller.key_name)
    return CallerOut(
        auth=resources.auth.mode,
        key=key,
        scopes=sorted(caller.scopes),
        namespaces=caller.namespaces.patterns(),
        default_namespace=caller.default_namespace,
        allow_cloud=caller.allow_cloud,
    )
