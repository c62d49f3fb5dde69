"""Reference vectors of each embedding space, for the parity check.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

`reference_texts` are the canary texts and `reference_vectors` their float32 vectors
(row-major, little-endian), captured from the first provider that embeds them for the
space. A provider may write into the space only while its own canary vectors match these.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("embedding_space", sa.Column("reference_texts", sa.ARRAY(sa.Text)))
    op.add_column("embedding_space", sa.Column("reference_vectors", sa.LargeBinary))
    op.add_column("embedding_space", sa.Column("reference_provider", sa.Text))


def downgrade() -> None:
    op.drop_column("embedding_space", "reference_provider")
    op.drop_column("embedding_space", "reference_vectors")
    op.drop_column("embedding_space", "reference_texts")
