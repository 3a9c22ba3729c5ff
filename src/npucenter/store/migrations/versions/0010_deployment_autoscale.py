"""Autoscaling bounds per deployment: min_replicas, max_replicas (both NULL: a fixed count).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("min_replicas", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_replicas", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("max_replicas")
        batch.drop_column("min_replicas")
