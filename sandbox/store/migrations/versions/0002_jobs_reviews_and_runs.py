"""jobs reviews and runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 16:58:14.538734
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('submitted_by', sa.String(length=40), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('sql', sa.Text(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('rejection_source', sa.String(length=20), nullable=True),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.Column('analysis', sa.JSON(), nullable=False),
    sa.Column('dataset_versions', sa.JSON(), nullable=False),
    sa.Column('reviews_required', sa.Integer(), nullable=False),
    sa.Column('frozen_sql', sa.Text(), nullable=True),
    sa.Column('frozen_sql_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_grant_id'), ['grant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('job_reviews',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('reviewer_id', sa.String(length=40), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'reviewer_id', name='uq_job_reviews_job_reviewer')
    )
    with op.batch_alter_table('job_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_reviews_job_id'), ['job_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('requested_by', sa.String(length=40), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('frozen_sql_sha256', sa.String(length=64), nullable=False),
    sa.Column('dataset_versions', sa.JSON(), nullable=False),
    sa.Column('rows_scanned', sa.BigInteger(), nullable=False),
    sa.Column('bytes_scanned', sa.BigInteger(), nullable=False),
    sa.Column('result_rows', sa.BigInteger(), nullable=False),
    sa.Column('result_bytes', sa.BigInteger(), nullable=False),
    sa.Column('suppressed_rows', sa.BigInteger(), nullable=False),
    sa.Column('truncated_rows', sa.BigInteger(), nullable=False),
    sa.Column('cpu_ms', sa.Double(), nullable=False),
    sa.Column('wall_ms', sa.Double(), nullable=False),
    sa.Column('error_code', sa.String(length=60), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('result_path', sa.String(length=500), nullable=True),
    sa.Column('result_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'requested_by', 'idempotency_key', name='uq_runs_idempotency')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_grant_id'), ['grant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_operator_org_id'), ['operator_org_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_operator_org_id'))
        batch_op.drop_index(batch_op.f('ix_runs_job_id'))
        batch_op.drop_index(batch_op.f('ix_runs_grant_id'))

    op.drop_table('runs')
    with op.batch_alter_table('job_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_reviews_job_id'))

    op.drop_table('job_reviews')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_operator_org_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_grant_id'))

    op.drop_table('jobs')
