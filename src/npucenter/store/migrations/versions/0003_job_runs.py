"""Job runs: exit code, log tail, failure reason and times on jobs; a result table.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JOB_COLUMNS = (
    ("started_at_s", sa.Float()),
    ("finished_at_s", sa.Float()),
    ("exit_code", sa.Integer()),
    ("log_tail", sa.Text()),
    ("failure_code", sa.String(length=32)),
    ("failure_reason", sa.String(length=1024)),
    ("runner", sa.String(length=32)),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, type_ in _JOB_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    op.create_table(
        "job_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("num_bytes", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_results_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_job_results_job_id")),
    )


def downgrade() -> None:
    op.drop_table("job_results")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, _ in reversed(_JOB_COLUMNS):
            batch_op.drop_column(name)
