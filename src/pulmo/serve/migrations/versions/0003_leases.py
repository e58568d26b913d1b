"""Leases for service replicas: ``analyses.claimed_by`` and ``analyses.lease_expires_at``
(empty for existing rows; a running row without a lease counts as expired).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64)))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("claimed_by")
