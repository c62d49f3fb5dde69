"""Making, listing, revoking and checking API keys, and the caller a key stands for.

Every request with a key reads that key's row (one indexed lookup by prefix): a revoked or
expired key is refused by every process sharing the database from its next request on, with
no cache to wait out.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.auth import keys, repository
from memory_service.core.access import EVERY_NAMESPACE, Actor, Namespaces
from memory_service.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized

Scope = Literal["read", "write", "chat", "embed", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# An exact namespace (the memories API's own pattern), or a prefix ending in `*`.
NAMESPACE_PATTERN = re.compile(r"^(?:[A-Za-z0-9._:-]{1,128}|[A-Za-z0-9._:-]{0,127}\*)$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who calls: a key (its id and name, scopes, namespaces, whether memory content may go
    to a cloud provider), or, with authentication off, the anonymous caller who may do all."""

    key_id: UUID | None
    key_name: str | None
    scopes: frozenset[str]
    namespaces: Namespaces
    allow_cloud: bool
    default_namespace: str | None = None

    @property
    def actor(self) -> Actor:
        """Who writes, for the audit columns: this key, or nobody with authentication off."""
        return Actor(self.key_id, self.key_name)

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope", {"scope": scope})


ANONYMOUS = Principal(None, None, frozenset(SCOPES), EVERY_NAMESPACE, True)


@dataclass(frozen=True)
class KeyInfo:
    id: UUID
    name: str
    namespaces: list[str]
    scopes: list[str]
    allow_cloud: bool
    default_namespace: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(kw_only=True)
class KeyService:
    engine: AsyncEngine

    async def create(
        self,
        *,
        name: str,
        namespaces: Sequence[str],
        scopes: Sequence[str],
        expires_at: datetime | None = None,
        allow_cloud: bool = False,
        default_namespace: str | None = None,
        grantor: Principal = ANONYMOUS,
    ) -> tuple[KeyInfo, str]:
        """The new key's description and the key itself, which is never shown again.
        `grantor`, the key making it over HTTP, must hold all it grants (Forbidden if not):
        namespaces within its own, scopes among its own, `allow_cloud` only if it has it.
        `default_namespace` must be a namespace the key's patterns cover."""
        _check(name, namespaces, scopes, expires_at)
        _check_default(default_namespace, namespaces)
        _within(grantor, namespaces, scopes, allow_cloud)
        made = keys.new_key()
        async with self.engine.begin() as conn:
            try:
                row = await repository.insert_key(
                    conn,
                    name=name,
                    prefix=made.prefix,
                    secret_sha256=made.digest,
                    namespaces=list(dict.fromkeys(namespaces)),
                    scopes=[scope for scope in SCOPES if scope in scopes],
                    allow_cloud=allow_cloud,
                    expires_at=expires_at,
                    default_namespace=default_namespace,
                )
            except repository.NameTaken as exc:
                raise Conflict(f"a key named {name!r} exists already", {"name": name}) from exc
        return _info(row), made.key

    async def list(self, viewer: Principal = ANONYMOUS) -> list[KeyInfo]:
        """Every key `viewer` may manage: those whose namespaces lie within its own."""
        async with self.engine.connect() as conn:
            rows = await repository.list_keys(conn)
        return [_info(row) for row in rows if _manages(viewer, row.namespaces)]

    async def revoke(self, id_or_name: str, revoker: Principal = ANONYMOUS) -> KeyInfo:
        """Revoke a key `revoker` may manage; NotFound otherwise, as for an unknown key."""
        async with self.engine.begin() as conn:
            row = await repository.find_by_id_or_name(conn, id_or_name)
            if row is not None and _manages(revoker, row.namespaces):
                row = await repository.revoke(conn, row.id)
            else:
                row = None
        if row is None:
            raise NotFound(f"no key has the id or name {id_or_name!r}", {"key": id_or_name})
        return _info(row)

    async def authenticate(self, key: str) -> Principal:
        """The caller `key` stands for; Unauthorized (401) for a key that is unknown, wrong,
        revoked or expired, with one message for all, so a guess learns nothing."""
        prefix = keys.prefix_of(key)
        row = None
        if prefix is not None:
            async with self.engine.connect() as conn:
                row = await repository.find_by_prefix(conn, prefix)
        if row is None or not keys.matches(key, row.secret_sha256) or not row.usable:
            raise Unauthorized("invalid API key: unknown, revoked or expired")
        return Principal(
            key_id=row.id,
            key_name=row.name,
            scopes=frozenset(row.scopes),
            namespaces=Namespaces.of(row.namespaces),
            allow_cloud=row.allow_cloud,
            default_namespace=row.default_namespace,
        )


def _manages(principal: Principal, namespaces: Sequence[str]) -> bool:
    return all(principal.namespaces.covers(pattern) for pattern in namespaces)


def _within(
    grantor: Principal, namespaces: Sequence[str], scopes: Sequence[str], allow_cloud: bool
) -> None:
    outside = [p for p in namespaces if not grantor.namespaces.covers(p)]
    if outside:
        raise Forbidden(
            f"a key cannot grant namespaces beyond its own: {outside}", {"namespaces": outside}
        )
    extra = sorted(set(scopes) - grantor.scopes)
    if extra:
        raise Forbidden(f"a key cannot grant scopes it lacks: {extra}", {"scopes": extra})
    if allow_cloud and not grantor.allow_cloud:
        raise Forbidden("a key cannot grant allow_cloud without having it", {"allow_cloud": True})


def _check(
    name: str, namespaces: Sequence[str], scopes: Sequence[str], expires_at: datetime | None
) -> None:
    if not KEY_NAME.match(name) or _is_uuid(name):
        raise InvalidRequest(
            f"key name {name!r}: letters, digits, '.', '_' and '-', at most 64, "
            "starting with a letter or digit, and not an id"
        )
    if not namespaces:
        raise InvalidRequest("a key needs at least one namespace pattern")
    for pattern in namespaces:
        if not NAMESPACE_PATTERN.match(pattern):
            raise InvalidRequest(
                f"namespace pattern {pattern!r}: a namespace, or a prefix ending in '*'",
                {"namespace": pattern},
            )
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise InvalidRequest(
            f"scopes must be some of {', '.join(SCOPES)}; not {unknown or 'none'}",
            {"allowed": list(SCOPES)},
        )
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidRequest("expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
        if expires_at <= datetime.now(UTC):
            raise InvalidRequest("expires_at is in the past")


def _check_default(default: str | None, namespaces: Sequence[str]) -> None:
    if default is None:
        return
    if not NAMESPACE_PATTERN.match(default) or default.endswith("*"):
        raise InvalidRequest(
            f"default namespace {default!r}: a namespace, not a pattern",
            {"default_namespace": default},
        )
    if not Namespaces.of(namespaces).allows(default):
        raise InvalidRequest(
            f"default namespace {default!r} is outside the key's namespaces {list(namespaces)}",
            {"default_namespace": default},
        )


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        namespaces=list(row.namespaces),
        scopes=list(row.scopes),
        allow_cloud=row.allow_cloud,
        default_namespace=row.default_namespace,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
