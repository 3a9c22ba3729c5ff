"""Device fallback lists for deployments: the accepted device types and each replica's choice.

``deployments.device_types`` (JSON; empty or NULL: ``device_type`` only) lists the device types
a deployment's replicas accept, in order of preference (its ``device_type`` first);
``replicas.device_type`` is the type admission placed a replica on (NULL while pending, and for
rows placed before this migration: the deployment's ``device_type``).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("device_types", sa.JSON(), nullable=True))
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("device_type", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("device_type")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("device_types")
