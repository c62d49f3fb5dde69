"""All SQL of the memories domain. Functions take a connection; callers own the transaction."""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pgvector import Vector
from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.access import EVERY_NAMESPACE, Namespaces
from memory_service.core.db import AnyRow
from memory_service.core.tables import memory
from memory_service.memories.schemas import MemoryFilters
from memory_service.providers.embedding import Vectors

# Every column a client sees; the vector itself is never sent back.
PUBLIC_COLUMNS = (
    memory.c.id,
    memory.c.namespace,
    memory.c.content,
    memory.c.metadata,
    memory.c.tags,
    memory.c.agent_id,
    memory.c.user_id,
    memory.c.session_id,
    memory.c.importance,
    memory.c.expires_at,
    memory.c.status,
    memory.c.created_at,
    memory.c.updated_at,
    memory.c.embedded_at,
    memory.c.last_error,
    memory.c.created_by_key_id,
    memory.c.created_by_key_name,
    memory.c.updated_by_key_id,
    memory.c.updated_by_key_name,
)


class DuplicateContent(Exception):
    """A content change collided with another memory of the namespace."""


@dataclass(frozen=True)
class PendingText:
    id: UUID
    content: str
    content_hash: bytes


@dataclass(frozen=True)
class Claim:
    """The right to write the vectors of some pending rows (migration 0012).

    A row's vector is written only under the claim that holds it, and writing it (or a
    refusal, or `release`) gives the claim up. A store claims the rows it embeds inline, the
    reconciler the rows it takes; neither takes a row the other holds, so a text is embedded
    once. A claim lapses after `seconds`, so the rows of a worker that died are taken again.
    """

    seconds: float
    token: UUID = field(default_factory=uuid.uuid4)

    def columns(self) -> dict[str, Any]:
        """The claim columns of a row this claim takes."""
        return {
            "embed_claim": self.token,
            "embed_claim_until": func.now() + timedelta(seconds=self.seconds),
        }

    def holds(self) -> ColumnElement[bool]:
        return memory.c.embed_claim == literal(self.token)


# A pending row nobody holds: never claimed, given back, or its claim lapsed.
_UNCLAIMED = and_(
    memory.c.status == "pending",
    or_(memory.c.embed_claim_until.is_(None), memory.c.embed_claim_until < func.now()),
)
_RELEASED = {"embed_claim": None, "embed_claim_until": None}


def content_hash(content: str) -> bytes:
    return hashlib.sha256(content.encode()).digest()


def live() -> ColumnElement[bool]:
    """Not expired. Expired memories are gone to every reader; the reconciler purges them."""
    return or_(memory.c.expires_at.is_(None), memory.c.expires_at > func.now())


def filter_clauses(namespace: str, filters: MemoryFilters) -> list[ColumnElement[bool]]:
    clauses = [memory.c.namespace == namespace]
    for scope in ("agent_id", "user_id", "session_id"):
        value = getattr(filters, scope)
        if value is not None:
            clauses.append(memory.c[scope] == value)
    if filters.tags_any:
        clauses.append(memory.c.tags.overlap(filters.tags_any))
    if filters.tags_all:
        clauses.append(memory.c.tags.contains(filters.tags_all))
    if filters.metadata:
        clauses.append(memory.c.metadata.contains(filters.metadata))
    if filters.created_after is not None:
        clauses.append(memory.c.created_at > filters.created_after)
    if filters.created_before is not None:
        clauses.append(memory.c.created_at < filters.created_before)
    return clauses


async def upsert_memories(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], claim: Claim
) -> list[AnyRow]:
    """Insert rows; a row whose content already exists in its namespace merges into it.

    Merge rule: metadata is shallow-merged (incoming keys win), tags are unioned in first-seen
    order, every other stored field is kept. An expired duplicate is deleted first, so the
    write starts a fresh memory. Rows must have distinct (namespace, content_hash). Returns
    one row per input with the public columns plus `created` and `claimed` (whether `claim`
    holds it: every new row, and an existing pending row no one else holds), in no
    particular order.
    """
    # One lock order for every writer: two batches sharing contents cannot deadlock.
    rows = sorted(rows, key=lambda row: (row["namespace"], row["content_hash"]))
    keys = [(row["namespace"], row["content_hash"]) for row in rows]
    await conn.execute(
        delete(memory).where(
            tuple_(memory.c.namespace, memory.c.content_hash).in_(keys),
            memory.c.expires_at <= func.now(),
        )
    )
    values = pg_insert(memory).values([{**row, **claim.columns()} for row in rows])
    statement = values.on_conflict_do_update(
        constraint="memory_namespace_content_hash_key",
        set_={
            "metadata": memory.c.metadata.op("||")(values.excluded.metadata),
            "tags": _TAGS_UNION,
            "updated_at": func.now(),
            "updated_by_key_id": values.excluded.updated_by_key_id,
            "updated_by_key_name": values.excluded.updated_by_key_name,
            "in_index": accepting(memory.c.space_id),
            "embed_claim": case(
                (_UNCLAIMED, values.excluded.embed_claim), else_=memory.c.embed_claim
            ),
            "embed_claim_until": case(
                (_UNCLAIMED, values.excluded.embed_claim_until), else_=memory.c.embed_claim_until
            ),
        },
    ).returning(
        *PUBLIC_COLUMNS,
        literal_column("(xmax = 0)").label("created"),
        claim.holds().label("claimed"),
    )
    return list((await conn.execute(statement)).all())


def accepting(space_id: ColumnElement[int]) -> ColumnElement[bool]:
    """The `in_index` of a memory row version written now: false while an ANN index of its
    space is being built (migration 0009's `vector_index_accepting`). Every statement that
    leaves a row with a vector sets it, updates of other columns too: a new row version
    with a vector and `in_index` true enters the space's diskann index, and pgvectorscale
    0.9 holds the lock of every insert into an index being built until the build ends.
    Evaluated inside the writing statement, which already holds its lock on `memory`, so a
    build that starts later waits for the write (and indexes it) before it reads the table."""
    return func.vector_index_accepting(literal("memory"), space_id)


_TAGS_UNION: ColumnElement[list[str]] = literal_column(
    "ARRAY(SELECT t FROM unnest(memory.tags || excluded.tags) WITH ORDINALITY AS u(t, n) "
    "GROUP BY t ORDER BY min(n))"
)


async def store_vectors(
    conn: AsyncConnection,
    space_id: int,
    items: Sequence[PendingText],
    vectors: Vectors,
    claim: Claim,
) -> dict[UUID, datetime]:
    """Attach vectors of space `space_id` to its pending rows that `claim` still holds and
    whose content is still the one that was embedded; that releases the claim.

    One statement for the whole batch. The content-hash guard drops a vector computed for
    text that a concurrent PATCH has since replaced (the PATCH claimed the row for the new
    text); the claim guard drops one computed after the claim lapsed and another worker
    took the row. While an index of the space is being built the rows wait in its tail
    (`in_index` false, `accepting`). Returns embedded_at by id for the rows it embedded.
    """
    result = await conn.execute(
        _STORE_VECTORS,
        {
            "space_id": space_id,
            "claim": claim.token,
            "ids": [item.id for item in items],
            "hashes": [item.content_hash for item in items],
            "embeddings": [Vector(vector).to_text() for vector in vectors],
        },
    )
    return {row.id: row.embedded_at for row in result}


_STORE_VECTORS = text(
    """
    UPDATE memory
    SET embedding = CAST(v.embedding AS vector), status = 'embedded',
        embedded_at = now(), last_error = NULL, embed_claim = NULL, embed_claim_until = NULL,
        in_index = (SELECT vector_index_accepting('memory', :space_id))
    FROM unnest(CAST(:ids AS uuid[]), CAST(:hashes AS bytea[]), CAST(:embeddings AS text[]))
        AS v(id, content_hash, embedding)
    WHERE memory.id = v.id AND memory.content_hash = v.content_hash
        AND memory.status = 'pending' AND memory.space_id = :space_id
        AND memory.embed_claim = :claim
    RETURNING memory.id, memory.embedded_at
    """
)


async def get_memory(
    conn: AsyncConnection, memory_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE
) -> AnyRow | None:
    """The live memory `memory_id`, if it is in `namespaces`."""
    statement = select(*PUBLIC_COLUMNS).where(
        memory.c.id == memory_id, live(), namespaces.clause(memory.c.namespace)
    )
    return (await conn.execute(statement)).first()


async def list_memories(
    conn: AsyncConnection, namespace: str, limit: int, after: tuple[datetime, UUID] | None
) -> list[AnyRow]:
    """Newest first, keyset-paginated on (created_at, id): a page never repeats or skips a
    row that existed when the listing began, whatever is inserted meanwhile."""
    statement = select(*PUBLIC_COLUMNS).where(memory.c.namespace == namespace, live())
    if after is not None:
        statement = statement.where(tuple_(memory.c.created_at, memory.c.id) < tuple_(*after))
    statement = statement.order_by(memory.c.created_at.desc(), memory.c.id.desc()).limit(limit)
    return list((await conn.execute(statement)).all())


async def update_memory(
    conn: AsyncConnection,
    memory_id: UUID,
    values: dict[str, Any],
    claim: Claim,
    namespaces: Namespaces = EVERY_NAMESPACE,
) -> AnyRow | None:
    """Apply `values`; a new content resets the row to pending, held by `claim` (a worker
    embedding the old content can no longer write its vector). None when absent or expired.

    Raises DuplicateContent when the new content already exists in the namespace.
    """
    if "content" in values:
        values = {
            **values,
            **claim.columns(),
            "content_hash": content_hash(values["content"]),
            "status": "pending",
            "embedding": None,
            "embedded_at": None,
            "embed_attempts": 0,
            "last_error": None,
        }
    statement = (
        update(memory)
        .where(memory.c.id == memory_id, live(), namespaces.clause(memory.c.namespace))
        .values(**values, updated_at=func.now(), in_index=accepting(memory.c.space_id))
        .returning(*PUBLIC_COLUMNS)
    )
    try:
        async with conn.begin_nested():
            return (await conn.execute(statement)).first()
    except IntegrityError as exc:
        if "memory_namespace_content_hash_key" in str(exc.orig):
            raise DuplicateContent from exc
        raise


async def delete_expired_duplicate(conn: AsyncConnection, namespace: str, content: str) -> None:
    """Delete an expired memory of `namespace` holding `content`: it is invisible and due for
    purging, so it must not block a live memory from taking that content (as in upserts)."""
    await conn.execute(
        delete(memory).where(
            memory.c.namespace == namespace,
            memory.c.content_hash == content_hash(content),
            memory.c.expires_at <= func.now(),
        )
    )


async def find_by_content(conn: AsyncConnection, namespace: str, content: str) -> UUID | None:
    statement = select(memory.c.id).where(
        memory.c.namespace == namespace, memory.c.content_hash == content_hash(content)
    )
    found: UUID | None = (await conn.execute(statement)).scalar_one_or_none()
    return found


async def delete_memory(
    conn: AsyncConnection, memory_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE
) -> bool:
    result = await conn.execute(
        delete(memory).where(
            memory.c.id == memory_id, live(), namespaces.clause(memory.c.namespace)
        )
    )
    return result.rowcount > 0


async def forget(conn: AsyncConnection, namespace: str, filters: MemoryFilters) -> int:
    result = await conn.execute(delete(memory).where(*filter_clauses(namespace, filters)))
    return result.rowcount


async def claim_pending(
    conn: AsyncConnection, space_id: int, claim: Claim, limit: int
) -> list[PendingText]:
    """Claim up to `limit` pending rows of the space that no one holds, oldest first.

    One short statement: the caller commits it before embedding, so no lock or connection
    is held while the embedder works. `SKIP LOCKED` lets several reconcilers (processes
    sharing the database) claim side by side without waiting on each other.
    """
    chosen = (
        select(memory.c.id)
        .where(memory.c.space_id == space_id, _UNCLAIMED)
        .order_by(memory.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(memory)
        .where(memory.c.id.in_(chosen))
        .values(**claim.columns())
        .returning(memory.c.id, memory.c.content, memory.c.content_hash)
    )
    return [PendingText(*row) for row in await conn.execute(statement)]


async def release(conn: AsyncConnection, ids: Sequence[UUID], claim: Claim) -> None:
    """Give back the rows of `ids` that `claim` still holds, for another worker to take now."""
    await conn.execute(
        update(memory).where(memory.c.id.in_(ids), claim.holds()).values(**_RELEASED)
    )


async def record_failure(
    conn: AsyncConnection, memory_id: UUID, error: str, max_attempts: int, claim: Claim
) -> None:
    """Count a failed attempt and give the row back; at `max_attempts` it becomes `failed`."""
    attempts = memory.c.embed_attempts + 1
    await conn.execute(
        update(memory)
        .where(memory.c.id == memory_id, claim.holds())
        .values(
            embed_attempts=attempts,
            last_error=error,
            status=case((attempts >= max_attempts, "failed"), else_=memory.c.status),
            **_RELEASED,
        )
    )


async def mark_refused(conn: AsyncConnection, item: PendingText, error: str, claim: Claim) -> None:
    """The embedder refused this text: `failed`, with its words, unless the content changed
    or the claim was lost."""
    await conn.execute(
        update(memory)
        .where(
            memory.c.id == item.id,
            memory.c.content_hash == item.content_hash,
            memory.c.status == "pending",
            claim.holds(),
        )
        .values(
            status="failed",
            last_error=error,
            embed_attempts=memory.c.embed_attempts + 1,
            **_RELEASED,
        )
    )


async def purge_expired(conn: AsyncConnection) -> int:
    result = await conn.execute(delete(memory).where(memory.c.expires_at <= func.now()))
    return result.rowcount


async def unembedded_counts(conn: AsyncConnection) -> dict[str, int]:
    """Memories not embedded (pending, failed), by status, live or expired alike; each count
    reads its status's partial index (`memory_pending_idx`, `memory_failed_idx`)."""
    counts = {}
    for status in ("pending", "failed"):
        statement = select(func.count()).select_from(memory).where(memory.c.status == status)
        counts[status] = int((await conn.execute(statement)).scalar_one())
    return counts
