"""job replaces: a corrected job links to the job it replaces

Revision ID: 0007
Revises: 0013
Create Date: 2026-11-28 12:35:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaces', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_replaces'), ['replaces'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_replaces'))
        batch_op.drop_column('replaces')
