"""Stories: a parent job per multi-shot film (its shots and segments are ordinary jobs).

Revision ID: 0005_stories
Revises: 0004_key_admin
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_stories"
down_revision = "0004_key_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("terminal", sa.Boolean, nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("fence", sa.Integer, nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("reserved_usd", sa.Float, nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_stories_tenant_idempotency_key"),
    )
    op.create_index("ix_stories_claim", "stories", ["terminal", "next_run_at"])
    op.create_index("ix_stories_tenant_created", "stories", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_stories_tenant_created", table_name="stories")
    op.drop_index("ix_stories_claim", table_name="stories")
    op.drop_table("stories")
