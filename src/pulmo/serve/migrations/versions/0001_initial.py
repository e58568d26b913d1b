"""Initial schema: analyses, audit trail, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("file_bytes", sa.BigInteger, nullable=False),
        sa.Column("file_kind", sa.String(8), nullable=False),
        sa.Column("file_info", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("model", sa.String(128)),
        sa.Column("checkpoint_sha256", sa.String(64)),
        sa.Column("pulmo_version", sa.String(32)),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_analyses_status", "analyses", ["status"])
    op.create_index("ix_analyses_file_sha256", "analyses", ["file_sha256"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("analysis_id", sa.String(32)),
        sa.Column("file_sha256", sa.String(64)),
        sa.Column("task", sa.String(32)),
        sa.Column("model", sa.String(128)),
        sa.Column("checkpoint_sha256", sa.String(64)),
        sa.Column("status", sa.String(16)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_analysis_id", "audit", ["analysis_id"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("audit")
    op.drop_table("analyses")
