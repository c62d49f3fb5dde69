"""B-tree indexes on the memory scopes a search filters by: user, agent, session.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A vector search over a small scope is planned as an exact scan of the scope's rows
(`search/query.py`: ANN indexes filtered down to a few rows lose recall). That scan is fast
only when the rows are found by an index: without these, a 1% user of a 100k-row namespace
was a sequential scan of the whole table (43 ms p50, against 2 to 5 ms through the index;
docs/benchmarks.md). Namespace and time range already have `memory_namespace_created_at_id_idx`,
tags and metadata their GIN indexes.
"""

from collections.abc import Sequence

from alembic import op

from memory_service.core.migrations import create_index_concurrently

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPES = ("user_id", "agent_id", "session_id")


def upgrade() -> None:
    # Concurrently, outside the migration's transaction: writes go on while a large table
    # is indexed.
    with op.get_context().autocommit_block():
        for column in SCOPES:
            create_index_concurrently(
                f"memory_namespace_{column}_idx",
                "memory",
                ["namespace", column],
                postgresql_where=f"{column} IS NOT NULL",
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for column in SCOPES:
            op.drop_index(
                f"memory_namespace_{column}_idx", table_name="memory", postgresql_concurrently=True
            )
