"""A default namespace per API key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

An MCP tool call that names no namespace uses its key's default (`keys create
--default-namespace`), so an agent host needs no namespace in its configuration. The default
is a namespace the key's patterns cover; keys made before have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_key", sa.Column("default_namespace", sa.Text()))


def downgrade() -> None:
    op.drop_column("api_key", "default_namespace")
