"""What runs, as the reconciler saw it, and the idle period of an autoscaled deployment.

``replicas.run_state`` (``starting`` | ``running`` | ``pending`` | ``failed``; NULL: no
reconciler reported it), ``run_reason`` (why it is not running: "no Ray node has RBLN:4"),
``run_since_s`` (when it entered that state); ``deployments.idle_to_zero_s`` (NULL: the
policy's default).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("run_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("run_reason", sa.String(512), nullable=True))
        batch.add_column(sa.Column("run_since_s", sa.Float(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("idle_to_zero_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("idle_to_zero_s")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("run_since_s")
        batch.drop_column("run_reason")
        batch.drop_column("run_state")
