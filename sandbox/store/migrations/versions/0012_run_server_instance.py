"""runs record the server instance that executes them (start-up recovery with several servers)

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-28 11:50:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_instance", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("server_instance")
