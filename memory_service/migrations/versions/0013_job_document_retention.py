"""Retention of finished jobs' inline documents.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

A job's inline documents (up to 16 M characters) are needed only until the job ends. After
`MEMORY_INGEST_RETENTION_DAYS` the worker empties them (`documents` becomes `[]`, which keeps
the one-source check) and records when in `documents_dropped_at`; the job record stays.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ingest_job", sa.Column("documents_dropped_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("ingest_job", "documents_dropped_at")
