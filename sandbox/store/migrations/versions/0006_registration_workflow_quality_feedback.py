"""registration workflow, quality profiles and feedback

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-28 08:13:42.621299
"""
from alembic import op
import sqlalchemy as sa

# Permission rows added by this revision (role-in-kind, object, action, scope). Frozen: change in a new migration.
_OBJECTORS = ["agency.admin", "agency.finance", "agency.reviewer", "provider.admin", "provider.finance",
              "provider.data_steward", "operator.admin", "operator.finance", "operator.operator", "customer.admin",
              "customer.finance", "customer.customer"]
MATRIX_0006 = [
    ('agency.admin', 'dataset', 'create', 'any'),
    ('provider.data_steward', 'registration', 'read', 'own'),
    ('provider.data_steward', 'registration', 'withdraw', 'own'),
    ('provider.data_steward', 'registration', 'revoke', 'own'),
    ('provider.admin', 'registration', 'read', 'own'),
    ('agency.admin', 'registration', 'read', 'any'),
    ('agency.admin', 'registration', 'accept', 'any'),
    ('agency.admin', 'registration', 'issue', 'any'),
    ('agency.admin', 'registration', 'revoke', 'any'),
    ('agency.admin', 'registration', 'certify_now', 'any'),
    ('agency.reviewer', 'registration', 'read', 'any'),
    ('agency.reviewer', 'registration', 'accept', 'any'),
    ('agency.reviewer', 'registration', 'review', 'any'),
    ('agency.reviewer', 'registration', 'issue', 'any'),
    ('regulator.regulator', 'registration', 'read', 'any'),
    *[(s, 'objection', 'create', 'own') for s in _OBJECTORS],
    ('operator.operator', 'quality_report', 'create', 'own'),
    ('customer.customer', 'quality_report', 'create', 'own'),
    ('provider.data_steward', 'quality_report', 'read', 'own'),
    ('provider.data_steward', 'quality_report', 'answer', 'own'),
    ('provider.admin', 'quality_report', 'read', 'own'),
    ('agency.admin', 'quality_report', 'read', 'any'),
    ('agency.reviewer', 'quality_report', 'read', 'any'),
    ('provider.data_steward', 'quality_stats', 'read', 'own'),
    ('provider.admin', 'quality_stats', 'read', 'own'),
    ('agency.admin', 'quality_stats', 'read', 'any'),
    ('agency.reviewer', 'quality_stats', 'read', 'any'),
    ('regulator.regulator', 'quality_stats', 'read', 'any'),
]

# Free-text update frequencies (lowercased, stripped) -> the enum; anything else becomes `irregular`.
_FREQUENCY_WORDS = {
    'daily': ('daily', 'day', 'every day', 'each day', 'hourly', 'real-time', 'realtime', 'real time',
              '每日', '每天', '日', '日更', '实时', '每小时'),
    'weekly': ('weekly', 'week', 'every week', '每周', '周', '周更'),
    'monthly': ('monthly', 'month', 'every month', '每月', '月', '月更'),
    'quarterly': ('quarterly', 'quarter', 'every quarter', '每季度', '季度', '每季'),
    'yearly': ('yearly', 'annual', 'annually', 'year', 'every year', '每年', '年', '年度'),
    'static': ('static', 'once', 'one-off', 'never', 'none', '一次性', '不更新', '静态'),
    'irregular': ('irregular', 'ad hoc', 'ad-hoc', 'as needed', '不定期'),
}


def map_update_frequency(text: str) -> str:
    """The enum value for a stored free-text update frequency (unknown text: `irregular`)."""
    key = (text or '').strip().lower()
    for value, words in _FREQUENCY_WORDS.items():
        if key in words:
            return value
    return 'irregular'


revision = '0006'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('quality_reports',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('provider_org_id', sa.String(length=40), nullable=False),
    sa.Column('filed_by', sa.String(length=40), nullable=False),
    sa.Column('filer_org_id', sa.String(length=40), nullable=False),
    sa.Column('category', sa.String(length=30), nullable=False),
    sa.Column('column', sa.String(length=128), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('answer_reason', sa.Text(), nullable=False),
    sa.Column('fixed_in_version', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('answered_by', sa.String(length=40), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['provider_org_id'], ['organizations.id'], ),
    sa.ForeignKeyConstraint(['version_id'], ['dataset_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('quality_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quality_reports_provider_org_id'), ['provider_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_quality_reports_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_quality_reports_version_id'), ['version_id'], unique=False)

    op.create_table('registration_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=30), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['dataset_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('registration_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registration_events_version_id'), ['version_id'], unique=False)

    op.create_table('registration_objections',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('filed_by', sa.String(length=40), nullable=False),
    sa.Column('filer_org_id', sa.String(length=40), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('filed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('resolved_by', sa.String(length=40), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['version_id'], ['dataset_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('registration_objections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registration_objections_version_id'), ['version_id'], unique=False)

    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_reason', sa.Text(), nullable=True))

    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('update_frequency_legacy', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('expectations', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('freshness_column', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('quality', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('registration_state', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('registration_path', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('state_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('return_fields', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('accepted_by', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('review_started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reviewed_by', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('notice_started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('notice_ends_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('certified_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('certificate_code', existing_type=sa.VARCHAR(length=32), nullable=True)

    # Versions stored before this revision were registered and certified at once: they are `certified`, by
    # the `migrated` path, applied and certified when they were created. Their free-text update frequency
    # is mapped to the enum; the original text is kept where it changed, because their certificates sign it.
    conn = op.get_bind()
    versions = sa.table(
        'dataset_versions', sa.column('id', sa.Integer), sa.column('update_frequency', sa.String),
        sa.column('update_frequency_legacy', sa.String), sa.column('created_at', sa.DateTime(timezone=True)),
        sa.column('expectations', sa.JSON), sa.column('quality', sa.JSON),
        sa.column('registration_state', sa.String), sa.column('registration_path', sa.String),
        sa.column('state_reason', sa.Text), sa.column('return_fields', sa.JSON),
        sa.column('applied_at', sa.DateTime(timezone=True)), sa.column('certified_at', sa.DateTime(timezone=True)))
    for row in conn.execute(sa.select(versions.c.id, versions.c.update_frequency, versions.c.created_at)).all():
        mapped = map_update_frequency(row.update_frequency)
        conn.execute(versions.update().where(versions.c.id == row.id).values(
            update_frequency=mapped,
            update_frequency_legacy=None if mapped == row.update_frequency else row.update_frequency,
            expectations=[], quality={}, registration_state='certified', registration_path='migrated',
            state_reason='registered and certified at once, before the registration workflow', return_fields=[],
            applied_at=row.created_at, certified_at=row.created_at))

    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        for name, typ in (('expectations', sa.JSON()), ('quality', sa.JSON()), ('return_fields', sa.JSON()),
                          ('registration_state', sa.String(length=20)),
                          ('registration_path', sa.String(length=20)), ('state_reason', sa.Text()),
                          ('applied_at', sa.DateTime(timezone=True))):
            batch_op.alter_column(name, existing_type=typ, nullable=False)
        batch_op.create_index(batch_op.f('ix_dataset_versions_registration_state'), ['registration_state'], unique=False)

    casbin_rule = sa.table(
        "casbin_rule",
        sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
        sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String),
        sa.column("v5", sa.String),
    )
    op.bulk_insert(casbin_rule, [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in MATRIX_0006
    ])

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stopped_reason', sa.Text(), nullable=True))



def downgrade() -> None:
    casbin_rule = sa.table("casbin_rule", sa.column("ptype", sa.String), sa.column("v0", sa.String),
                           sa.column("v1", sa.String), sa.column("v2", sa.String), sa.column("v3", sa.String))
    for s, o, a, sc in MATRIX_0006:
        op.execute(casbin_rule.delete().where(casbin_rule.c.ptype == "p", casbin_rule.c.v0 == s,
                                              casbin_rule.c.v1 == o, casbin_rule.c.v2 == a, casbin_rule.c.v3 == sc))
    conn = op.get_bind()
    versions = sa.table('dataset_versions', sa.column('update_frequency', sa.String),
                        sa.column('update_frequency_legacy', sa.String))
    conn.execute(versions.update().where(versions.c.update_frequency_legacy.is_not(None))
                 .values(update_frequency=versions.c.update_frequency_legacy))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stopped_reason')

    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_versions_registration_state'))
        batch_op.alter_column('certificate_code',
               existing_type=sa.VARCHAR(length=32),
               nullable=False)
        batch_op.drop_column('closed_at')
        batch_op.drop_column('certified_at')
        batch_op.drop_column('notice_ends_at')
        batch_op.drop_column('notice_started_at')
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('reviewed_by')
        batch_op.drop_column('review_started_at')
        batch_op.drop_column('accepted_by')
        batch_op.drop_column('accepted_at')
        batch_op.drop_column('applied_at')
        batch_op.drop_column('return_fields')
        batch_op.drop_column('state_reason')
        batch_op.drop_column('registration_path')
        batch_op.drop_column('registration_state')
        batch_op.drop_column('quality')
        batch_op.drop_column('freshness_column')
        batch_op.drop_column('expectations')
        batch_op.drop_column('update_frequency_legacy')

    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('revoked_reason')
        batch_op.drop_column('revoked_at')

    with op.batch_alter_table('registration_objections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registration_objections_version_id'))

    op.drop_table('registration_objections')
    with op.batch_alter_table('registration_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registration_events_version_id'))

    op.drop_table('registration_events')
    with op.batch_alter_table('quality_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quality_reports_version_id'))
        batch_op.drop_index(batch_op.f('ix_quality_reports_status'))
        batch_op.drop_index(batch_op.f('ix_quality_reports_provider_org_id'))

    op.drop_table('quality_reports')
