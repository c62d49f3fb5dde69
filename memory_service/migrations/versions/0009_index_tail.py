"""Writes that never wait for an index build: vectors written during a build wait in a tail.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

pgvectorscale 0.9.0 takes a transaction-level advisory lock in every insert into a diskann
index, before it even looks at the vector (`aminsert_internal` in its `build.rs`; its issue
#265). The validation phase of `CREATE INDEX CONCURRENTLY` inserts every row written during
the build in one transaction, so it holds that lock for the whole phase, and each write
that reached the new index meanwhile waited for it: 43 s at 100k rows (docs/benchmarks.md).

So a vector row now says whether it belongs in the space's ANN index (`in_index`), and the
lifecycle's indexes hold only those rows (`search/index_repository.py`: `WHERE space_id = N
AND in_index`, and `AND embedding IS NOT NULL` where the column is nullable). Every write
statement that leaves a row with a vector sets `in_index = vector_index_accepting(table,
space)`: false while a diskann build of that table and space runs in this database (its
builder holds an advisory lock of class 7,340,002 keyed by the `vector_index` row,
`search/indexes.py`). Rows written during a build therefore never reach the index being
built, nor the one it replaces, and the build has none of them to insert. They form the
tail: searches read it exactly beside the index (`search/repository.py`), through the
partial B-tree indexes made here, and the pass that built the index moves the tail into it
right after the build, in short batches.

Existing lifecycle indexes lack the new predicate. They keep serving, since a search's
`in_index` clauses imply their `space_id = N`, and tail rows still enter them until they are
replaced. They are marked for a rebuild at the next pass.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from memory_service.core.migrations import create_index_concurrently

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("memory", "chunk")

# Whether writes to `table_name` in space `space_id` may enter its ANN index now: not while
# a builder in this database holds its gate lock (class 7,340,002, `search/index_repository.py`
# GATE_LOCK_CLASS). pg_locks lists the locks of every database on the server, whose keys
# repeat, hence the database filter. It reads the lock table itself, not a snapshot, so a
# gate taken a moment ago is seen at once: VOLATILE, not STABLE.
_ACCEPTING = """
CREATE OR REPLACE FUNCTION vector_index_accepting(table_name text, space_id integer) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT NOT EXISTS (
        SELECT FROM pg_catalog.pg_locks AS l
        JOIN vector_index AS i ON l.objid = i.id::oid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
            AND l.classid = 7340002::oid
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND i.table_name = $1 AND i.space_id = $2
    )
$$
"""


def upgrade() -> None:
    # Retryable: the index builds below commit this part first, and when one of them fails
    # the revision is not recorded, so a second upgrade runs all of it again.
    for table in TABLES:
        # A constant default: no table rewrite.
        op.add_column(
            table,
            sa.Column("in_index", sa.Boolean(), nullable=False, server_default=sa.true()),
            if_not_exists=True,
        )
    op.execute(_ACCEPTING)
    op.execute("UPDATE vector_index SET rebuild_requested_at = now() WHERE index_name IS NOT NULL")
    with op.get_context().autocommit_block():
        for table in TABLES:
            create_index_concurrently(
                f"{table}_tail_idx", table, ["space_id"], postgresql_where="NOT in_index"
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for table in TABLES:
            op.drop_index(f"{table}_tail_idx", table_name=table, postgresql_concurrently=True)
    op.execute("DROP FUNCTION vector_index_accepting(text, integer)")
    for table in TABLES:
        # Drops the lifecycle's indexes too: their predicate names the column.
        op.drop_column(table, "in_index")
    op.execute(
        "UPDATE vector_index SET index_name = NULL, method = NULL "
        "WHERE index_name IS NOT NULL AND to_regclass(index_name) IS NULL"
    )
