"""a grant chooses its engine (duckdb or spark)

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-28 11:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engine', sa.String(length=20), nullable=False, server_default='duckdb'))


def downgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_column('engine')
