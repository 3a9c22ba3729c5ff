"""Quota policy: a tenant's stop policy, opt-in to borrow unnamed device types, fair-share
weight; nested cohorts (a parent and cards of their own); fungible jobs (device types in order).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stop_policy", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.add_column(
            sa.Column(
                "borrow_unnamed_device_types",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch_op.add_column(
            sa.Column("fair_share_weight", sa.Float(), nullable=False, server_default="1.0")
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("device_types", sa.JSON(), nullable=False, server_default="[]")
        )
    op.create_table(
        "cohorts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=True),
        sa.Column("nominal_cards", sa.JSON(), nullable=False),
        sa.Column("borrowing_limit_cards", sa.JSON(), nullable=False),
        sa.Column("lending_limit_cards", sa.JSON(), nullable=False),
        sa.Column("fair_share_weight", sa.Float(), nullable=False),
        sa.Column("updated_at_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cohorts")),
        sa.UniqueConstraint("name", name=op.f("uq_cohorts_name")),
    )


def downgrade() -> None:
    op.drop_table("cohorts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("device_types")
    with op.batch_alter_table("quotas", schema=None) as batch_op:
        batch_op.drop_column("fair_share_weight")
        batch_op.drop_column("borrow_unnamed_device_types")
        batch_op.drop_column("stop_policy")
