"""Deployments: the engine that serves each one (virtual, vllm, furiosa-llm, vllm-rbln, external)
and its options (model path, limits, an external server's URL and key variable; never a secret).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("engine", sa.String(length=32), nullable=False, server_default="virtual")
        )
        batch_op.add_column(
            sa.Column("engine_options", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("engine_options")
        batch_op.drop_column("engine")
