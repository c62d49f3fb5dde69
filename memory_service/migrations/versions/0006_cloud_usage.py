"""Cloud chat budget: one row of usage per UTC day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

The daily budget (requests and tokens sent to cloud chat providers) is enforced by a single
conditional upsert on this row (`gateway/repository.py`), so it holds across restarts and across
any number of service processes sharing the database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cloud_usage",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("requests >= 0 AND tokens >= 0", name="cloud_usage_non_negative"),
    )


def downgrade() -> None:
    op.drop_table("cloud_usage")
