"""API keys: a salted scrypt hash and a short public id instead of unsalted SHA-256 and a prefix.

Existing keys keep working: their hash becomes scrypt over the stored SHA-256 digest (the
``scrypt-sha256`` scheme), tenant keys are found by the first 8 characters of their old prefix
and admin keys by trying (``*``). The 12 clear characters of every secret are dropped.
Downgrading cannot restore the SHA-256 digests: it revokes every key (re-issue one locally with
``npucenter db admin-key``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa
from alembic import op

from npucenter.store.keys import SCAN_TAG, hash_secret, new_secret

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KEYS = sa.table(
    "api_keys",
    sa.column("id", sa.Integer),
    sa.column("prefix", sa.String),
    sa.column("secret_sha256", sa.String),
    sa.column("scope", sa.String),
    sa.column("short_id", sa.String),
    sa.column("secret_hash", sa.String),
    sa.column("lookup_tag", sa.String),
    sa.column("revoked_at_s", sa.Float),
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("short_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("secret_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lookup_tag", sa.String(length=8), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_KEYS.c.id, _KEYS.c.prefix, _KEYS.c.secret_sha256, _KEYS.c.scope))
    for key_id, prefix, digest, scope in list(rows):
        conn.execute(
            _KEYS.update()
            .where(_KEYS.c.id == key_id)
            .values(
                short_id=new_secret()[0],
                secret_hash=hash_secret(digest, legacy_sha256=True),
                lookup_tag=SCAN_TAG if scope == "admin" else (prefix or "")[:8],
            )
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("short_id", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("secret_hash", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("lookup_tag", existing_type=sa.String(length=8), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_api_keys_short_id"), ["short_id"])
        batch_op.create_index(batch_op.f("ix_api_keys_lookup_tag"), ["lookup_tag"], unique=False)
        batch_op.drop_constraint(batch_op.f("uq_api_keys_secret_sha256"), type_="unique")
        batch_op.drop_column("secret_sha256")
        batch_op.drop_column("prefix")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("secret_sha256", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    now = time.time()
    for key_id, short_id, revoked in list(
        conn.execute(sa.select(_KEYS.c.id, _KEYS.c.short_id, _KEYS.c.revoked_at_s))
    ):
        unusable = hashlib.sha256(f"revoked by downgrade {short_id}".encode()).hexdigest()
        conn.execute(
            _KEYS.update()
            .where(_KEYS.c.id == key_id)
            .values(prefix=short_id, secret_sha256=unusable, revoked_at_s=revoked or now)
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("prefix", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("secret_sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_secret_sha256"), ["secret_sha256"]
        )
        batch_op.drop_index(batch_op.f("ix_api_keys_lookup_tag"))
        batch_op.drop_constraint(batch_op.f("uq_api_keys_short_id"), type_="unique")
        batch_op.drop_column("lookup_tag")
        batch_op.drop_column("secret_hash")
        batch_op.drop_column("short_id")
