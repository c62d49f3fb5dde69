"""Embedding spaces: which model, dimension and normalization a set of vectors belongs to.

A space is recorded the first time a service writes into it. A later start whose embedder
disagrees on model or dimension is refused: mixing vectors of two models in one index would
silently corrupt every search.

The migrations create `embedding` columns untyped (`vector`), because the dimension comes
from the embedding space, not from the schema. The first space registered in a database
types them (`vector(dim)`): pgvectorscale's `diskann` indexes typed columns only, not
expressions. So one database stores one dimension; a space of another dimension is refused
with a clear error. Every search filters on `space_id`, so two spaces never share a search;
each space's ANN indexes are partial (`WHERE space_id = id`) and built from its real rows by
the index lifecycle (`search/indexes.py`), never here on an empty table. The column typing
depends on data, which is why it lives here and not in a migration.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from pgvector.sqlalchemy import Vector
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_service.core.errors import StartupError
from memory_service.core.tables import VECTOR_TABLES, embedding_space
from memory_service.providers.embedding import Vectors


@dataclass(frozen=True)
class EmbeddingSpace:
    id: int
    name: str
    model: str
    dimension: int
    normalized: bool


async def register_space(
    engine: AsyncEngine, name: str, model: str, dimension: int, normalized: bool
) -> EmbeddingSpace:
    """Return the space `name`, recording it (and typing the vector columns) at first use.

    Raises StartupError when the recorded space has another model or dimension, or when the
    database already stores vectors of another dimension.
    """
    async with engine.begin() as conn:
        # Serialize concurrent first starts of several processes on the same database.
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("embedding_space"))))
        row = (
            await conn.execute(select(embedding_space).where(embedding_space.c.name == name))
        ).first()
        if row is None:
            await _type_vector_columns(conn, name, dimension)
            space_id = (
                await conn.execute(
                    insert(embedding_space)
                    .values(name=name, model=model, dimension=dimension, normalized=normalized)
                    .returning(embedding_space.c.id)
                )
            ).scalar_one()
            return EmbeddingSpace(space_id, name, model, dimension, normalized)
        space = EmbeddingSpace(row.id, row.name, row.model, row.dimension, row.normalized)
        if (space.model, space.dimension, space.normalized) == (model, dimension, normalized):
            # Vector tables added by later migrations are typed here.
            await _type_vector_columns(conn, name, dimension)
    if (space.model, space.dimension, space.normalized) != (model, dimension, normalized):
        recorded = _describe(space.model, space.dimension, space.normalized)
        configured = _describe(model, dimension, normalized)
        raise StartupError(
            f"embedding space {name!r} holds vectors of {recorded}, but the configured "
            f"embedder is {configured}. Vectors of two models "
            "must never be mixed: configure the original model again, or use another "
            "MEMORY_EMBEDDING_SPACE or a fresh database for the new one."
        )
    return space


async def list_spaces(engine: AsyncEngine) -> list[EmbeddingSpace]:
    """Every space recorded in the database, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                embedding_space.c.id,
                embedding_space.c.name,
                embedding_space.c.model,
                embedding_space.c.dimension,
                embedding_space.c.normalized,
            ).order_by(embedding_space.c.id)
        )
        return [EmbeddingSpace(*row) for row in rows]


def _describe(model: str, dimension: int, normalized: bool) -> str:
    return f"{model} ({dimension}-dim, {'normalized' if normalized else 'not normalized'})"


async def _type_vector_columns(conn: AsyncConnection, name: str, dimension: int) -> None:
    for table in VECTOR_TABLES:
        current = (
            await conn.execute(
                text(
                    "SELECT atttypmod FROM pg_attribute "
                    "WHERE attrelid = CAST(:table AS regclass) AND attname = 'embedding'"
                ),
                {"table": table.name},
            )
        ).scalar_one()
        if current == dimension:
            continue
        if current != -1:
            raise StartupError(
                f"this database stores {current}-dim vectors; space {name!r} would need "
                f"{dimension}-dim. One database holds one dimension: use a fresh database "
                "(MEMORY_DATABASE_URL or MEMORY_DATA_DIR) for this model."
            )
        await conn.run_sync(_alter_vector_type, table.name, dimension)


def _alter_vector_type(conn: Connection, table_name: str, dimension: int) -> None:
    operations = Operations(MigrationContext.configure(conn))
    operations.alter_column(table_name, "embedding", type_=Vector(dimension))


async def load_references(
    engine: AsyncEngine, space_id: int
) -> tuple[tuple[str, ...], Vectors] | None:
    """The space's canary texts and reference vectors, or None before they are captured."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    embedding_space.c.reference_texts,
                    embedding_space.c.reference_vectors,
                    embedding_space.c.dimension,
                ).where(embedding_space.c.id == space_id)
            )
        ).first()
    if row is None or row.reference_vectors is None:
        return None
    vectors = np.frombuffer(row.reference_vectors, dtype="<f4").reshape(-1, row.dimension)
    return tuple(row.reference_texts), vectors


async def capture_references(
    engine: AsyncEngine, space_id: int, texts: Sequence[str], vectors: Vectors, provider: str
) -> Vectors:
    """Record the references unless some process already has; return those that hold."""
    async with engine.begin() as conn:
        await conn.execute(
            update(embedding_space)
            .where(embedding_space.c.id == space_id, embedding_space.c.reference_vectors.is_(None))
            .values(
                reference_texts=list(texts),
                reference_vectors=np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
                reference_provider=provider,
            )
        )
    references = await load_references(engine, space_id)
    assert references is not None
    return references[1]
