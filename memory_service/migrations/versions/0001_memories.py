"""Extensions, embedding spaces and memories.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

`vectorscale` is created where the server offers it (the embedded server and
timescaledb-ha do); without it the per-space vector indexes fall back to HNSW.
The downgrade drops the tables but keeps the extensions: other schemas in the same
database may use them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vectorscale') THEN
                CREATE EXTENSION IF NOT EXISTS vectorscale CASCADE;
            END IF;
        END
        $$
        """
    )
    op.create_table(
        "embedding_space",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("normalized", sa.Boolean, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("dimension > 0", name="embedding_space_dimension_positive"),
    )
    op.create_table(
        "memory",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.func.gen_random_uuid()
        ),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "tags", sa.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")
        ),
        sa.Column("agent_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("importance", sa.Float, nullable=False, server_default=sa.text("0.5")),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
        sa.Column("space_id", sa.Integer, sa.ForeignKey("embedding_space.id"), nullable=False),
        sa.Column("embedding", Vector()),
        sa.Column("embed_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("embedded_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("namespace", "content_hash", name="memory_namespace_content_hash_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'embedded', 'failed')", name="memory_status_valid"
        ),
        sa.CheckConstraint(
            "(status = 'embedded') = (embedding IS NOT NULL)", name="memory_embedded_has_vector"
        ),
        sa.CheckConstraint("importance >= 0 AND importance <= 1", name="memory_importance_range"),
    )
    op.create_index(
        "memory_namespace_created_at_id_idx", "memory", ["namespace", "created_at", "id"]
    )
    op.create_index(
        "memory_pending_idx",
        "memory",
        ["space_id", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("memory_tags_idx", "memory", ["tags"], postgresql_using="gin")
    op.create_index(
        "memory_metadata_idx",
        "memory",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.create_index(
        "memory_expires_at_idx",
        "memory",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("memory")
    op.drop_table("embedding_space")
