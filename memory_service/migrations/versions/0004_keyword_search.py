"""Keyword search: full-text indexes on memory content and chunk text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Two keyword strategies exist (`memory_service/search/repository.py`):

- BM25 through `pg_textsearch`, where the server offers it (the embedded server bundles and
  preloads it). The extension is created only if it is available, and inside an exception
  block: a server that ships it without preloading it refuses `CREATE EXTENSION`, and that
  must not fail the migration. The `bm25` indexes are built only where the extension exists.
- PostgreSQL full text (`ts_rank_cd` over `to_tsvector('english', ...)`), served by GIN
  expression indexes that are built everywhere, so the fallback is indexed on every server.

The downgrade drops the indexes and keeps the extension, as 0001 does.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_textsearch') THEN
                BEGIN
                    CREATE EXTENSION IF NOT EXISTS pg_textsearch;
                EXCEPTION WHEN OTHERS THEN
                    RAISE NOTICE 'pg_textsearch not created (%); keyword search uses full text',
                        SQLERRM;
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
    op.execute(
        "CREATE INDEX memory_content_fts_idx ON memory USING gin (to_tsvector('english', content))"
    )
    op.execute("CREATE INDEX chunk_text_fts_idx ON chunk USING gin (to_tsvector('english', text))")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS chunk_text_fts_idx")
    op.execute("DROP INDEX IF EXISTS memory_content_fts_idx")
    op.execute("DROP INDEX IF EXISTS chunk_text_bm25_idx")
    op.execute("DROP INDEX IF EXISTS memory_content_bm25_idx")
