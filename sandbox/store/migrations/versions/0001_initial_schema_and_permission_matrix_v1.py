"""initial schema and permission matrix v1

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 16:48:56.423042
"""
from alembic import op
import sqlalchemy as sa


# Permission matrix v1 (role-in-kind, object, action, scope). Frozen: change it in a new migration.
MATRIX_V1 = [
    ('platform.admin', 'org', 'create', 'any'),
    ('platform.admin', 'org', 'read', 'any'),
    ('platform.admin', 'principal', 'create', 'any'),
    ('platform.admin', 'principal', 'read', 'any'),
    ('platform.admin', 'api_key', 'create', 'any'),
    ('platform.admin', 'api_key', 'revoke', 'any'),
    ('platform.admin', 'audit', 'read', 'any'),
    ('agency.admin', 'org', 'read', 'own'),
    ('agency.admin', 'principal', 'create', 'own'),
    ('agency.admin', 'principal', 'read', 'own'),
    ('agency.admin', 'api_key', 'create', 'own'),
    ('agency.admin', 'api_key', 'revoke', 'own'),
    ('agency.admin', 'self', 'read', 'own'),
    ('agency.admin', 'dataset', 'read', 'any'),
    ('agency.finance', 'self', 'read', 'own'),
    ('agency.finance', 'dataset', 'read', 'any'),
    ('agency.finance', 'org', 'read', 'own'),
    ('agency.reviewer', 'self', 'read', 'own'),
    ('agency.reviewer', 'dataset', 'read', 'any'),
    ('agency.reviewer', 'org', 'read', 'own'),
    ('provider.admin', 'org', 'read', 'own'),
    ('provider.admin', 'principal', 'create', 'own'),
    ('provider.admin', 'principal', 'read', 'own'),
    ('provider.admin', 'api_key', 'create', 'own'),
    ('provider.admin', 'api_key', 'revoke', 'own'),
    ('provider.admin', 'self', 'read', 'own'),
    ('provider.admin', 'dataset', 'read', 'any'),
    ('provider.finance', 'self', 'read', 'own'),
    ('provider.finance', 'dataset', 'read', 'any'),
    ('provider.finance', 'org', 'read', 'own'),
    ('provider.data_steward', 'self', 'read', 'own'),
    ('provider.data_steward', 'dataset', 'read', 'any'),
    ('provider.data_steward', 'org', 'read', 'own'),
    ('operator.admin', 'org', 'read', 'own'),
    ('operator.admin', 'principal', 'create', 'own'),
    ('operator.admin', 'principal', 'read', 'own'),
    ('operator.admin', 'api_key', 'create', 'own'),
    ('operator.admin', 'api_key', 'revoke', 'own'),
    ('operator.admin', 'self', 'read', 'own'),
    ('operator.admin', 'dataset', 'read', 'any'),
    ('operator.finance', 'self', 'read', 'own'),
    ('operator.finance', 'dataset', 'read', 'any'),
    ('operator.finance', 'org', 'read', 'own'),
    ('operator.operator', 'self', 'read', 'own'),
    ('operator.operator', 'dataset', 'read', 'any'),
    ('operator.operator', 'org', 'read', 'own'),
    ('customer.admin', 'org', 'read', 'own'),
    ('customer.admin', 'principal', 'create', 'own'),
    ('customer.admin', 'principal', 'read', 'own'),
    ('customer.admin', 'api_key', 'create', 'own'),
    ('customer.admin', 'api_key', 'revoke', 'own'),
    ('customer.admin', 'self', 'read', 'own'),
    ('customer.admin', 'dataset', 'read', 'any'),
    ('customer.finance', 'self', 'read', 'own'),
    ('customer.finance', 'dataset', 'read', 'any'),
    ('customer.finance', 'org', 'read', 'own'),
    ('customer.customer', 'self', 'read', 'own'),
    ('customer.customer', 'dataset', 'read', 'any'),
    ('customer.customer', 'org', 'read', 'own'),
    ('regulator.admin', 'org', 'read', 'own'),
    ('regulator.admin', 'principal', 'create', 'own'),
    ('regulator.admin', 'principal', 'read', 'own'),
    ('regulator.admin', 'api_key', 'create', 'own'),
    ('regulator.admin', 'api_key', 'revoke', 'own'),
    ('regulator.admin', 'self', 'read', 'own'),
    ('regulator.admin', 'dataset', 'read', 'any'),
    ('regulator.finance', 'self', 'read', 'own'),
    ('regulator.finance', 'dataset', 'read', 'any'),
    ('regulator.finance', 'org', 'read', 'own'),
    ('regulator.regulator', 'self', 'read', 'own'),
    ('regulator.regulator', 'dataset', 'read', 'any'),
    ('regulator.regulator', 'org', 'read', 'own'),
    ('agency.admin', 'grant', 'create', 'any'),
    ('agency.admin', 'grant', 'change', 'any'),
    ('agency.admin', 'grant', 'read', 'any'),
    ('agency.admin', 'audit', 'read', 'any'),
    ('agency.admin', 'job', 'read', 'any'),
    ('agency.admin', 'run', 'read', 'any'),
    ('agency.reviewer', 'grant', 'read', 'any'),
    ('agency.reviewer', 'job', 'read', 'any'),
    ('agency.reviewer', 'job', 'review', 'any'),
    ('agency.reviewer', 'run', 'read', 'any'),
    ('provider.data_steward', 'dataset', 'create', 'own'),
    ('operator.operator', 'grant', 'read', 'own'),
    ('operator.operator', 'job', 'create', 'own'),
    ('operator.operator', 'job', 'read', 'own'),
    ('operator.operator', 'run', 'create', 'own'),
    ('operator.operator', 'run', 'read', 'own'),
    ('operator.operator', 'result', 'read', 'own'),
    ('operator.admin', 'grant', 'read', 'own'),
    ('operator.admin', 'job', 'read', 'own'),
    ('operator.admin', 'run', 'read', 'own'),
    ('operator.finance', 'grant', 'read', 'own'),
    ('regulator.regulator', 'org', 'read', 'any'),
    ('regulator.regulator', 'principal', 'read', 'any'),
    ('regulator.regulator', 'grant', 'read', 'any'),
    ('regulator.regulator', 'audit', 'read', 'any'),
    ('regulator.regulator', 'job', 'read', 'any'),
    ('regulator.regulator', 'run', 'read', 'any'),
    ('regulator.regulator', 'result', 'read', 'any'),
]

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=40), nullable=True),
    sa.Column('actor_org_id', sa.String(length=40), nullable=True),
    sa.Column('via', sa.String(length=10), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('resource', sa.String(length=200), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=False),
    sa.Column('rule', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('code', sa.String(length=60), nullable=True),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)

    op.create_table('casbin_rule',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ptype', sa.String(length=8), nullable=False),
    sa.Column('v0', sa.String(length=100), nullable=False),
    sa.Column('v1', sa.String(length=100), nullable=False),
    sa.Column('v2', sa.String(length=100), nullable=False),
    sa.Column('v3', sa.String(length=100), nullable=False),
    sa.Column('v4', sa.String(length=100), nullable=False),
    sa.Column('v5', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('organizations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('is_platform', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('datasets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('provider_org_id', sa.String(length=40), nullable=False),
    sa.Column('latest_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['provider_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datasets_provider_org_id'), ['provider_org_id'], unique=False)

    op.create_table('grants',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('domains', sa.JSON(), nullable=False),
    sa.Column('datasets', sa.JSON(), nullable=False),
    sa.Column('scenario', sa.JSON(), nullable=True),
    sa.Column('purpose_class', sa.String(length=20), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('min_group_size', sa.Integer(), nullable=False),
    sa.Column('max_result_rows', sa.Integer(), nullable=False),
    sa.Column('auto_approve', sa.Boolean(), nullable=False),
    sa.Column('column_overrides', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grants_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('principals',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_id', 'name', name='uq_principals_org_name')
    )
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_principals_org_id'), ['org_id'], unique=False)

    op.create_table('api_keys',
    sa.Column('id', sa.String(length=24), nullable=False),
    sa.Column('principal_id', sa.String(length=40), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_principal_id'), ['principal_id'], unique=False)

    op.create_table('certificates',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=32), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('code'),
    sa.UniqueConstraint('year', 'seq', name='uq_certificates_year_seq')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('dataset_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('domain', sa.String(length=40), nullable=False),
    sa.Column('update_frequency', sa.String(length=40), nullable=False),
    sa.Column('grade', sa.String(length=20), nullable=False),
    sa.Column('entity_column', sa.String(length=128), nullable=True),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('row_count', sa.BigInteger(), nullable=False),
    sa.Column('byte_size', sa.BigInteger(), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('source_bytes', sa.BigInteger(), nullable=False),
    sa.Column('parquet_sha256', sa.String(length=64), nullable=False),
    sa.Column('source_name', sa.String(length=300), nullable=False),
    sa.Column('storage_path', sa.String(length=500), nullable=False),
    sa.Column('certificate_code', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('certificate_code'),
    sa.UniqueConstraint('dataset_id', 'version', name='uq_dataset_versions_dataset_version')
    )
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_versions_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('grant_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=True),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('grant_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grant_events_grant_id'), ['grant_id'], unique=False)


    casbin_rule = sa.table(
        "casbin_rule",
        sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
        sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String),
        sa.column("v5", sa.String),
    )
    op.bulk_insert(casbin_rule, [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in MATRIX_V1
    ])


def downgrade() -> None:
    with op.batch_alter_table('grant_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grant_events_grant_id'))

    op.drop_table('grant_events')
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_versions_dataset_id'))

    op.drop_table('dataset_versions')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_dataset_id'))

    op.drop_table('certificates')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_principal_id'))

    op.drop_table('api_keys')
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_principals_org_id'))

    op.drop_table('principals')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grants_operator_org_id'))

    op.drop_table('grants')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datasets_provider_org_id'))

    op.drop_table('datasets')
    op.drop_table('organizations')
    op.drop_table('casbin_rule')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_id'))

    op.drop_table('audit_events')
