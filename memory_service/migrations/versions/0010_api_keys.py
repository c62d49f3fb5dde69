"""API keys: who may call the service, on which namespaces, with which scopes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A key is `msk_<prefix>_<secret>`. Only its SHA-256 is stored, beside the prefix it is looked
up by (`auth/keys.py`); the secret is shown once, when the key is made. Revoking or expiring
a key is a write to this table, so every process sharing the database refuses it from its
next request on (`auth/service.py` reads the row on every request).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.func.gen_random_uuid()
        ),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("prefix", sa.Text(), nullable=False, unique=True),
        sa.Column("secret_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("namespaces", ARRAY(sa.Text()), nullable=False),
        sa.Column("scopes", ARRAY(sa.Text()), nullable=False),
        sa.Column("allow_cloud", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("cardinality(namespaces) > 0", name="api_key_has_namespaces"),
        sa.CheckConstraint("cardinality(scopes) > 0", name="api_key_has_scopes"),
    )


def downgrade() -> None:
    op.drop_table("api_key")
