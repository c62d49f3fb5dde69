"""A partial index on failed memories, so `/metrics` counts them without a scan.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

`GET /metrics` reports pending and failed memories at every scrape. Pending ones are counted
through `memory_pending_idx`; failed ones had no index, so each scrape read the whole table.
Failed rows are few, and so is this index.
"""

from collections.abc import Sequence

from alembic import op

from memory_service.core.migrations import create_index_concurrently

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Concurrently, outside the migration's transaction: writes go on while it is built.
    with op.get_context().autocommit_block():
        create_index_concurrently(
            "memory_failed_idx", "memory", ["space_id"], postgresql_where="status = 'failed'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("memory_failed_idx", table_name="memory", postgresql_concurrently=True)
