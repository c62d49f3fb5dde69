"""Ingestion jobs: the Postgres queue behind `POST /v1/ingest/jobs`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

One table, `ingest_job`. Inline documents are stored in the job row as JSONB (see the note
above `ingest_job` in `core/tables.py` for why); a server-side job stores its resolved
`path` instead. Workers take jobs with `FOR UPDATE SKIP LOCKED` and hold them by a lease
(`claimed_by`, `lease_expires_at`); `ingest_job_work_idx` holds only the jobs a worker may
still take, so the work query stays small however many finished jobs are kept.
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, now: bool = False) -> "sa.Column[datetime]":
    if now:
        return sa.Column(
            name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        )
    return sa.Column(name, sa.DateTime(timezone=True))


def _count(name: str) -> "sa.Column[int]":
    return sa.Column(name, sa.Integer, nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "ingest_job",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.func.gen_random_uuid()
        ),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("documents", JSONB),
        sa.Column("state", sa.Text, nullable=False, server_default=sa.text("'queued'")),
        _count("attempts"),
        _timestamp("run_after", now=True),
        sa.Column("claimed_by", sa.Text),
        _timestamp("lease_expires_at"),
        sa.Column("documents_total", sa.Integer),
        _count("documents_ingested"),
        _count("documents_unchanged"),
        _count("documents_failed"),
        _count("chunks"),
        sa.Column("document_errors", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("last_error", sa.Text),
        _timestamp("created_at", now=True),
        _timestamp("updated_at", now=True),
        _timestamp("started_at"),
        _timestamp("finished_at"),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'dead')",
            name="ingest_job_state_valid",
        ),
        sa.CheckConstraint("(path IS NULL) <> (documents IS NULL)", name="ingest_job_one_source"),
    )
    op.create_index(
        "ingest_job_work_idx",
        "ingest_job",
        ["run_after"],
        postgresql_where=sa.text("state IN ('queued', 'running')"),
    )
    op.create_index("ingest_job_created_at_id_idx", "ingest_job", ["created_at", "id"])


def downgrade() -> None:
    op.drop_table("ingest_job")
