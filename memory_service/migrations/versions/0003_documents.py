"""Documents and their chunks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

`chunk.embedding` is created untyped like `memory.embedding`; the service types it and
builds its per-space vector index at start (`embeddings/spaces.py`), for spaces registered
before this revision too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.func.gen_random_uuid()
        ),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("chunking", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("space_id", sa.Integer, sa.ForeignKey("embedding_space.id"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("namespace", "source_uri", name="document_namespace_source_uri_key"),
    )
    op.create_table(
        "chunk",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "document_id",
            UUID(as_uuid=True),
            sa.ForeignKey("document.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("space_id", sa.Integer, sa.ForeignKey("embedding_space.id"), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.UniqueConstraint("document_id", "ordinal", name="chunk_document_id_ordinal_key"),
    )


def downgrade() -> None:
    op.drop_table("chunk")
    op.drop_table("document")
