"""Admin is a property of an API key, never of a tenant's name.

Revision ID: 0004_key_admin
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_key_admin"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing keys are not admin: a key of a tenant once named "admin" loses the
    # cross-tenant view until an operator creates a key with `vidgate keys create --admin`
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("admin")
