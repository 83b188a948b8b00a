"""Poison containment: per-job drive error count, last error, quarantine reason.

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


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("drive_errors", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_drive_error", sa.Text))
        batch.add_column(sa.Column("quarantine", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("quarantine")
        batch.drop_column("last_drive_error")
        batch.drop_column("drive_errors")
