"""release ledger, dataset populations, suppression per cell

Revision ID: 0003
Revises: 0004
Create Date: 2026-11-23 09:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('release_thresholds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('population', sa.String(length=64), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('release_thresholds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_thresholds_population'), ['population'], unique=False)
    op.create_table('release_sets',
    sa.Column('population', sa.String(length=64), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('entities', sa.BigInteger(), nullable=False),
    sa.Column('bitmap', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('population', 'digest')
    )
    op.create_table('release_cells',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('population', sa.String(length=64), nullable=False),
    sa.Column('measure', sa.String(length=300), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['population', 'digest'], ['release_sets.population', 'release_sets.digest'],
                            name='fk_release_cells_set'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('release_cells', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_cells_population'), ['population'], unique=False)
        batch_op.create_index(batch_op.f('ix_release_cells_run_id'), ['run_id'], unique=False)

    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('population', sa.String(length=64), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('suppressed_rows', new_column_name='suppressed_cells', existing_type=sa.BigInteger(),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('suppression', sa.JSON(), nullable=False, server_default='{}'))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.alter_column('suppression', server_default=None, existing_type=sa.JSON(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('suppression')
        batch_op.alter_column('suppressed_cells', new_column_name='suppressed_rows', existing_type=sa.BigInteger(),
                              existing_nullable=False)
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_column('population')
    with op.batch_alter_table('release_cells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_cells_run_id'))
        batch_op.drop_index(batch_op.f('ix_release_cells_population'))
    op.drop_table('release_cells')
    op.drop_table('release_sets')
    with op.batch_alter_table('release_thresholds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_thresholds_population'))
    op.drop_table('release_thresholds')
