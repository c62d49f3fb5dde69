"""All SQL of the documents domain. Functions take a connection; callers own the transaction."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pgvector.psycopg import register_vector_async
from sqlalchemy import and_, delete, not_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_service.core.access import NOBODY, Actor
from memory_service.core.tables import document
from memory_service.providers.embedding import Vectors


@dataclass(frozen=True)
class StoredDocument:
    id: UUID
    content_hash: bytes
    chunking: str
    chunk_count: int
    # The audit columns (migration 0011), as `memories.schemas.audit_fields` reads them.
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewDocument:
    source_uri: str
    title: str | None
    metadata: dict[str, object]
    content_hash: bytes
    chunks: Sequence[tuple[str, int]]  # (text, token count), in order
    vectors: Vectors


AUDIT_COLUMNS = (
    document.c.created_by_key_id,
    document.c.created_by_key_name,
    document.c.updated_by_key_id,
    document.c.updated_by_key_name,
)


async def stored_document(
    conn: AsyncConnection, namespace: str, source_uri: str
) -> StoredDocument | None:
    row = (
        await conn.execute(
            select(
                document.c.id,
                document.c.content_hash,
                document.c.chunking,
                document.c.chunk_count,
                *AUDIT_COLUMNS,
            ).where(document.c.namespace == namespace, document.c.source_uri == source_uri)
        )
    ).first()
    if row is None:
        return None
    audit = {column.name: getattr(row, column.name) for column in AUDIT_COLUMNS}
    return StoredDocument(row.id, row.content_hash, row.chunking, row.chunk_count, audit)


async def stored_versions(
    conn: AsyncConnection, namespace: str, source_uris: Sequence[str]
) -> dict[str, tuple[bytes, str]]:
    """(content hash, chunking) of each of `source_uris` the namespace holds, in one query."""
    if not source_uris:
        return {}
    rows = await conn.execute(
        _STORED_VERSIONS, {"namespace": namespace, "source_uris": list(source_uris)}
    )
    return {row.source_uri: (row.content_hash, row.chunking) for row in rows}


_STORED_VERSIONS = text(
    """
    SELECT source_uri, content_hash, chunking FROM document
    WHERE namespace = :namespace AND source_uri = ANY(CAST(:source_uris AS text[]))
    """
)


async def replace_documents(
    conn: AsyncConnection,
    namespace: str,
    space_id: int,
    chunking: str,
    documents: Sequence[NewDocument],
    actor: Actor = NOBODY,
) -> int:
    """Write documents and their chunks, replacing any earlier version of each; returns the
    chunks written. `actor` is recorded as the creator of new rows and the last changer of
    every row. Within the caller's transaction, so a document's chunks change at once.

    A constant number of round trips whatever the number of documents: one upsert of every
    document row (`INSERT ... SELECT FROM unnest(...) ON CONFLICT`), one delete of the
    replaced chunks, one binary COPY of the new ones. `documents` must have distinct source
    URIs (one statement cannot upsert a row twice)."""
    if not documents:
        return 0
    ids = await _upsert_documents(conn, namespace, space_id, chunking, documents, actor)
    await conn.execute(_DELETE_CHUNKS, {"ids": list(ids.values())})
    # Read after the delete, which holds this transaction's lock on `chunk`: a build that
    # closes the gate later waits for this transaction and indexes its chunks (migration
    # 0009). Chunks written while a build runs wait in the tail instead of in the index.
    in_index = bool((await conn.execute(_ACCEPTING, {"space_id": space_id})).scalar_one())
    rows = [
        (ids[new.source_uri], ordinal, body, tokens, space_id, vector, in_index)
        for new in documents
        for ordinal, ((body, tokens), vector) in enumerate(
            zip(new.chunks, new.vectors, strict=True)
        )
    ]
    await _copy_chunks(conn, rows)
    return len(rows)


async def _upsert_documents(
    conn: AsyncConnection,
    namespace: str,
    space_id: int,
    chunking: str,
    documents: Sequence[NewDocument],
    actor: Actor,
) -> dict[str, UUID]:
    """Insert or replace the document rows; their ids by source URI. Rows are sent in
    source-URI order, one lock order for every writer, so concurrent batches that share
    documents wait for each other instead of deadlocking."""
    ordered = sorted(documents, key=lambda new: new.source_uri)
    result = await conn.execute(
        _UPSERT_DOCUMENTS,
        {
            "namespace": namespace,
            "space_id": space_id,
            "chunking": chunking,
            "source_uris": [new.source_uri for new in ordered],
            "titles": [new.title for new in ordered],
            "hashes": [new.content_hash for new in ordered],
            "metadata": [json.dumps(new.metadata) for new in ordered],
            "chunk_counts": [len(new.chunks) for new in ordered],
            "key_id": actor.key_id,
            "key_name": actor.key_name,
        },
    )
    return {row.source_uri: row.id for row in result}


_UPSERT_DOCUMENTS = text(
    """
    INSERT INTO document (namespace, source_uri, title, content_hash, chunking, metadata,
                          chunk_count, space_id, created_by_key_id, created_by_key_name,
                          updated_by_key_id, updated_by_key_name)
    SELECT :namespace, v.source_uri, v.title, v.content_hash, :chunking,
           CAST(v.metadata AS jsonb), v.chunk_count, :space_id,
           CAST(:key_id AS uuid), CAST(:key_name AS text),
           CAST(:key_id AS uuid), CAST(:key_name AS text)
    FROM unnest(CAST(:source_uris AS text[]), CAST(:titles AS text[]),
                CAST(:hashes AS bytea[]), CAST(:metadata AS text[]),
                CAST(:chunk_counts AS int[]))
        WITH ORDINALITY AS v(source_uri, title, content_hash, metadata, chunk_count, n)
    ORDER BY v.n
    ON CONFLICT ON CONSTRAINT document_namespace_source_uri_key DO UPDATE
    SET title = excluded.title, content_hash = excluded.content_hash,
        chunking = excluded.chunking, metadata = excluded.metadata,
        chunk_count = excluded.chunk_count, space_id = excluded.space_id, updated_at = now(),
        updated_by_key_id = excluded.updated_by_key_id,
        updated_by_key_name = excluded.updated_by_key_name
    RETURNING id, source_uri
    """
)

_DELETE_CHUNKS = text("DELETE FROM chunk WHERE document_id = ANY(CAST(:ids AS uuid[]))")


_COPY_CHUNKS = (
    "COPY chunk (document_id, ordinal, text, token_count, space_id, embedding, in_index) "
    "FROM STDIN (FORMAT BINARY)"
)


_ACCEPTING = text("SELECT vector_index_accepting('chunk', :space_id)")


async def _copy_chunks(
    conn: AsyncConnection, rows: Sequence[tuple[UUID, int, str, int, int, Vectors, bool]]
) -> None:
    if not rows:
        return
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await register_vector_async(driver)
    async with driver.cursor() as cursor, cursor.copy(_COPY_CHUNKS) as copy:
        copy.set_types(["uuid", "int4", "text", "int4", "int4", "vector", "bool"])
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
