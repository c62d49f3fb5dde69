"""Embedding claims: a pending memory is embedded by one worker at a time, without a lock.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

A store that embeds its rows inline and the background reconciler used to meet on the same
pending rows: the reconciler's `FOR UPDATE SKIP LOCKED` saw the committed pending row the
store was still embedding, embedded it a second time, and the store answered `pending` for
a memory that ended `embedded`. The reconciler also held its row locks (and a connection)
for the whole embedding call, so a PATCH of one of those rows waited behind it.

A claim replaces both: `embed_claim` is the token of the worker that may write the row's
vector, `embed_claim_until` when that right lapses (a crashed worker's rows are claimable
again then). Claiming is one short statement; the embedding runs with no transaction open;
the vector is written only under the claim's token, which releases it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("memory", sa.Column("embed_claim", UUID(as_uuid=True)))
    op.add_column("memory", sa.Column("embed_claim_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("memory", "embed_claim_until")
    op.drop_column("memory", "embed_claim")
