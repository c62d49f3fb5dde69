"""Embedding spaces: which model, dimension and normalization a set of vectors belongs to.

A space is recorded the first time a service writes into it. A later start whose embedder
disagrees on model or dimension is refused: mixing vectors of two models in one index would
silently corrupt every search. Registering a space also creates its vector index on every
vector table: `diskann` (pgvectorscale) with cosine distance where the extension is
installed, HNSW otherwise, as a partial expression index `(embedding::vector(dim)) WHERE
space_id = id`. The dimension is data, not schema, which is why this DDL lives here and
not in a migration; search queries repeat the same cast so the planner matches the index.
"""

from dataclasses import dataclass

from pgvector.sqlalchemy import Vector
from sqlalchemy import Index, Table, cast, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.elements import ColumnElement

from memory_service.core.errors import StartupError
from memory_service.core.tables import VECTOR_TABLES, embedding_space


@dataclass(frozen=True)
class EmbeddingSpace:
    id: int
    name: str
    model: str
    dimension: int
    normalized: bool

    def vector_of(self, table: Table) -> ColumnElement[object]:
        """The table's embedding column cast to this space's dimension, as its index has it."""
        return cast(table.c.embedding, Vector(self.dimension))


def vector_index_name(table: Table, space_id: int) -> str:
    return f"{table.name}_embedding_space_{space_id}_idx"


async def register_space(
    engine: AsyncEngine, name: str, model: str, dimension: int, normalized: bool
) -> EmbeddingSpace:
    """Return the space `name`, recording it (and building its indexes) at first use.

    Raises StartupError when the recorded space has another model or dimension.
    """
    async with engine.begin() as conn:
        # Serialize concurrent first starts of several processes on the same database.
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("embedding_space"))))
        row = (
            await conn.execute(select(embedding_space).where(embedding_space.c.name == name))
        ).first()
        if row is None:
            space_id = (
                await conn.execute(
                    insert(embedding_space)
                    .values(name=name, model=model, dimension=dimension, normalized=normalized)
                    .returning(embedding_space.c.id)
                )
            ).scalar_one()
            space = EmbeddingSpace(space_id, name, model, dimension, normalized)
            await _create_vector_indexes(conn, space)
            return space
    space = EmbeddingSpace(row.id, row.name, row.model, row.dimension, row.normalized)
    if (space.model, space.dimension) != (model, dimension):
        raise StartupError(
            f"embedding space {name!r} holds vectors of {space.model} ({space.dimension}-dim), "
            f"but the configured embedder is {model} ({dimension}-dim). Vectors of two models "
            "must never be mixed: configure the original model again, or use another "
            "MEMORY_EMBEDDING_SPACE or a fresh database for the new one."
        )
    return space


async def _create_vector_indexes(conn: AsyncConnection, space: EmbeddingSpace) -> None:
    has_vectorscale = (
        await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vectorscale'"))
    ).first() is not None
    method, ops = (
        ("diskann", "vector_cosine_ops") if has_vectorscale else ("hnsw", "vector_cosine_ops")
    )
    for table in VECTOR_TABLES:
        index = Index(
            vector_index_name(table, space.id),
            space.vector_of(table).label("embedding"),
            postgresql_using=method,
            postgresql_ops={"embedding": ops},
            postgresql_where=table.c.space_id == space.id,
        )
        await conn.execute(CreateIndex(index, if_not_exists=True))
