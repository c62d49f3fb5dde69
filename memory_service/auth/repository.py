"""All SQL of API keys. Functions take a connection; callers own the transaction."""

import contextlib
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.db import AnyRow
from memory_service.core.tables import api_key

PUBLIC_COLUMNS = (
    api_key.c.id,
    api_key.c.name,
    api_key.c.namespaces,
    api_key.c.scopes,
    api_key.c.allow_cloud,
    api_key.c.default_namespace,
    api_key.c.created_at,
    api_key.c.expires_at,
    api_key.c.revoked_at,
)


class NameTaken(Exception):
    pass


async def insert_key(
    conn: AsyncConnection,
    *,
    name: str,
    prefix: str,
    secret_sha256: bytes,
    namespaces: Sequence[str],
    scopes: Sequence[str],
    allow_cloud: bool,
    expires_at: datetime | None,
    default_namespace: str | None = None,
) -> AnyRow:
    """The new key's public columns; NameTaken when a key has that name already."""
    statement = (
        insert(api_key)
        .values(
            name=name,
            prefix=prefix,
            secret_sha256=secret_sha256,
            namespaces=list(namespaces),
            scopes=list(scopes),
            allow_cloud=allow_cloud,
            expires_at=expires_at,
            default_namespace=default_namespace,
        )
        .on_conflict_do_nothing(index_elements=[api_key.c.name])
        .returning(*PUBLIC_COLUMNS)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        raise NameTaken(name)
    return row


async def list_keys(conn: AsyncConnection) -> Sequence[AnyRow]:
    statement = select(*PUBLIC_COLUMNS).order_by(api_key.c.created_at, api_key.c.name)
    return (await conn.execute(statement)).all()


async def find_by_id_or_name(conn: AsyncConnection, id_or_name: str) -> AnyRow | None:
    """The key with that id (when it parses as one), else with that name; names are never
    id-shaped (`service._check`), so one text finds at most one key."""
    which: ColumnElement[bool] = api_key.c.name == id_or_name
    with contextlib.suppress(ValueError):  # not an id: by name only
        which = api_key.c.id == UUID(id_or_name)
    return (await conn.execute(select(*PUBLIC_COLUMNS).where(which))).first()


async def revoke(conn: AsyncConnection, key_id: UUID) -> AnyRow | None:
    """Revoke the key (a revoked key stays revoked, at its first time)."""
    statement = (
        update(api_key)
        .where(api_key.c.id == key_id)
        .values(revoked_at=func.coalesce(api_key.c.revoked_at, func.now()))
        .returning(*PUBLIC_COLUMNS)
    )
    return (await conn.execute(statement)).first()


async def find_by_prefix(conn: AsyncConnection, prefix: str) -> AnyRow | None:
    """The key with `prefix`, its digest and whether it is usable now (the database's clock
    decides expiry, as it does for every process)."""
    statement = select(
        *PUBLIC_COLUMNS,
        api_key.c.secret_sha256,
        (
            api_key.c.revoked_at.is_(None)
            & or_(api_key.c.expires_at.is_(None), api_key.c.expires_at > func.now())
        ).label("usable"),
    ).where(api_key.c.prefix == prefix)
    return (await conn.execute(statement)).first()
