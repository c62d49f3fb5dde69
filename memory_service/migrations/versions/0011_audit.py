"""Audit: which API key made and last changed each memory and document.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Each memory and document records the key (its id and name, kept as written: a revoked
key's name still says who it was) that created it and that changed it last; an ingestion
job records the key that submitted it, so the documents its worker writes are that key's.
Rows written with authentication off, or before this migration, have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDITED = ("memory", "document")


def upgrade() -> None:
    for table in AUDITED:
        for action in ("created", "updated"):
            op.add_column(table, sa.Column(f"{action}_by_key_id", UUID(as_uuid=True)))
            op.add_column(table, sa.Column(f"{action}_by_key_name", sa.Text()))
    op.add_column("ingest_job", sa.Column("created_by_key_id", UUID(as_uuid=True)))
    op.add_column("ingest_job", sa.Column("created_by_key_name", sa.Text()))


def downgrade() -> None:
    op.drop_column("ingest_job", "created_by_key_name")
    op.drop_column("ingest_job", "created_by_key_id")
    for table in AUDITED:
        for action in ("created", "updated"):
            op.drop_column(table, f"{action}_by_key_name")
            op.drop_column(table, f"{action}_by_key_id")
