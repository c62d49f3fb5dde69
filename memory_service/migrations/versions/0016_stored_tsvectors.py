"""Keyword search reads stored tsvectors instead of parsing every matching text again.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

The full-text GIN indexes of 0004 were built on the expression `to_tsvector('english', ...)`.
An index on an expression finds the rows, but PostgreSQL keeps no copy of the tsvector, so
each search parsed the text again for every row it looked at: to recheck `@@`, to count the
query terms a hybrid search asks for, and for `ts_rank_cd`. With 701 chunks of about 1,400
characters in a namespace, one hybrid search spent 300 ms of its 318 ms there
(`docs/benchmarks.md`, Interference). The PostgreSQL manual's advice for this case is a
separate tsvector column: "searches will be faster, since it will not be necessary to redo
the to_tsvector calls to verify index matches" (Full Text Search, 12.2.2 Creating Indexes).

`memory.content_tsv` and `chunk.text_tsv` are generated from the text (STORED: PostgreSQL 18
would make a generated column virtual by default, and a virtual one cannot be indexed), so
no writer can forget them. The GIN indexes keep their names and move to the columns.

Upgrading rewrites both tables under an ACCESS EXCLUSIVE lock, their indexes included (the
vector indexes too): reads and writes of memories and chunks wait until it is done. Plan the
upgrade of a large install for a quiet moment.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, text column, tsvector column, GIN index)
_TABLES = (
    ("memory", "content", "content_tsv", "memory_content_fts_idx"),
    ("chunk", "text", "text_tsv", "chunk_text_fts_idx"),
)


def upgrade() -> None:
    for table, column, tsv, index in _TABLES:
        op.execute(f"DROP INDEX IF EXISTS {index}")
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN {tsv} tsvector "
            f"GENERATED ALWAYS AS (to_tsvector('english', {column})) STORED"
        )
        op.execute(f"CREATE INDEX {index} ON {table} USING gin ({tsv})")


def downgrade() -> None:
    for table, column, tsv, index in _TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN {tsv}")  # drops its index
        op.execute(f"CREATE INDEX {index} ON {table} USING gin (to_tsvector('english', {column}))")
