"""All SQL of the documents domain. Functions take a connection; callers own the transaction."""

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from pgvector.psycopg import register_vector_async
from sqlalchemy import and_, delete, func, not_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.tables import chunk, document
from memory_service.embeddings.provider import Vectors


@dataclass(frozen=True)
class StoredDocument:
    id: UUID
    content_hash: bytes
    chunking: str
    chunk_count: int


@dataclass(frozen=True)
class NewDocument:
    source_uri: str
    title: str | None
    metadata: dict[str, object]
    content_hash: bytes
    chunks: Sequence[tuple[str, int]]  # (text, token count), in order
    vectors: Vectors


async def stored_document(
    conn: AsyncConnection, namespace: str, source_uri: str
) -> StoredDocument | None:
    row = (
        await conn.execute(
            select(
                document.c.id, document.c.content_hash, document.c.chunking, document.c.chunk_count
            ).where(document.c.namespace == namespace, document.c.source_uri == source_uri)
        )
    ).first()
    if row is None:
        return None
    return StoredDocument(row.id, row.content_hash, row.chunking, row.chunk_count)


async def replace_documents(
    conn: AsyncConnection,
    namespace: str,
    space_id: int,
    chunking: str,
    documents: Sequence[NewDocument],
) -> int:
    """Write documents and their chunks, replacing any earlier version of each; returns the
    chunks written. Within the caller's transaction, so a document's chunks change at once.
    Chunks go in with one binary COPY."""
    rows = []
    for new in documents:
        document_id = await _upsert_document(conn, namespace, space_id, chunking, new)
        await conn.execute(delete(chunk).where(chunk.c.document_id == document_id))
        rows += [
            (document_id, ordinal, text, tokens, space_id, vector)
            for ordinal, ((text, tokens), vector) in enumerate(
                zip(new.chunks, new.vectors, strict=True)
            )
        ]
    await _copy_chunks(conn, rows)
    return len(rows)


async def _upsert_document(
    conn: AsyncConnection, namespace: str, space_id: int, chunking: str, new: NewDocument
) -> UUID:
    values = {
        "namespace": namespace,
        "source_uri": new.source_uri,
        "title": new.title,
        "content_hash": new.content_hash,
        "chunking": chunking,
        "metadata": new.metadata,
        "chunk_count": len(new.chunks),
        "space_id": space_id,
    }
    insert = pg_insert(document).values(values)
    replaced = {
        key: insert.excluded[key] for key in values if key not in ("namespace", "source_uri")
    }
    statement = insert.on_conflict_do_update(
        constraint="document_namespace_source_uri_key",
        set_={**replaced, "updated_at": func.now()},
    ).returning(document.c.id)
    document_id: UUID = (await conn.execute(statement)).scalar_one()
    return document_id


_COPY_CHUNKS = (
    "COPY chunk (document_id, ordinal, text, token_count, space_id, embedding) "
    "FROM STDIN (FORMAT BINARY)"
)


async def _copy_chunks(
    conn: AsyncConnection, rows: Sequence[tuple[UUID, int, str, int, int, Vectors]]
) -> None:
    if not rows:
        return
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await register_vector_async(driver)
    async with driver.cursor() as cursor, cursor.copy(_COPY_CHUNKS) as copy:
        copy.set_types(["uuid", "int4", "text", "int4", "int4", "vector"])
        for row in rows:
            await copy.write_row(row)


async def prune(
    conn: AsyncConnection, namespace: str, folder_uris: Sequence[str], seen: set[str]
) -> list[str]:
    """Delete the namespace's documents under `folder_uris` that this run did not see (their
    files are gone); returns their source URIs."""
    if not folder_uris:
        return []
    under = or_(*(document.c.source_uri.startswith(uri, autoescape=True) for uri in folder_uris))
    condition = and_(document.c.namespace == namespace, under)
    if seen:
        condition = and_(condition, not_(document.c.source_uri.in_(sorted(seen))))
    result = await conn.execute(delete(document).where(condition).returning(document.c.source_uri))
    return sorted(result.scalars())
