"""Usage ledger: the gateway request id of a row, unique (replaying the usage journal is idempotent).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_usage_ledger_request_id"), ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_usage_ledger_request_id"), type_="unique")
        batch_op.drop_column("request_id")
