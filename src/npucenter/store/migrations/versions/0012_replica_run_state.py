"""What runs, as the reconciler saw it, and the idle period of an autoscaled deployment.

``replicas.run_state`` (``starting`` | ``running`` | ``pending`` | ``failed``; NULL: no
reconciler reported it), ``run_reason`` (why it is not running: "no Ray node has RBLN:4"),
``run_since_s`` (when it entered that state); ``deployments.idle_to_zero_s`` (NULL: the
policy's default).

Revision ID: 0012
Revises: 0011 (0010 until 0011 exists)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0012"
# 0011 (console sessions) is another helper's, landing in the same session: until it is on
# main this one follows 0010. NOTE(migrations): make it the literal "0011" once 0011 is in.
down_revision = "0011" if any(Path(__file__).parent.glob("0011_*.py")) else "0010"
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
