"""metering usage prices and bills

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 08:26:46.942516
"""
from alembic import op
import sqlalchemy as sa

# Permission rows for metering (role-in-kind, object, action, scope); docs/permissions.md lists them.
# `own` means: prices -> the platform agency; price lists -> the operator; usage and bills -> payer or issuer
# (changes: the issuer); attribution -> the dataset's provider; revenue -> the operator.
MATRIX_METERING = [
    ('agency.admin', 'price', 'change', 'own'),
    ('agency.finance', 'price', 'change', 'own'),
    ('operator.admin', 'pricelist', 'change', 'own'),
    ('operator.finance', 'pricelist', 'change', 'own'),
    ('agency.admin', 'usage', 'read', 'any'),
    ('agency.finance', 'usage', 'read', 'any'),
    ('regulator.regulator', 'usage', 'read', 'any'),
    ('operator.operator', 'usage', 'read', 'own'),
    ('operator.admin', 'usage', 'read', 'own'),
    ('operator.finance', 'usage', 'read', 'own'),
    ('customer.admin', 'usage', 'read', 'own'),
    ('customer.finance', 'usage', 'read', 'own'),
    ('customer.customer', 'usage', 'read', 'own'),
    ('agency.admin', 'usage', 'reverse', 'own'),
    ('agency.finance', 'usage', 'reverse', 'own'),
    ('operator.finance', 'usage', 'reverse', 'own'),
    ('agency.admin', 'bill', 'create', 'own'),
    ('agency.finance', 'bill', 'create', 'own'),
    ('operator.admin', 'bill', 'create', 'own'),
    ('operator.finance', 'bill', 'create', 'own'),
    ('agency.admin', 'bill', 'read', 'any'),
    ('agency.finance', 'bill', 'read', 'any'),
    ('regulator.regulator', 'bill', 'read', 'any'),
    ('regulator.finance', 'bill', 'read', 'any'),
    ('operator.admin', 'bill', 'read', 'own'),
    ('operator.finance', 'bill', 'read', 'own'),
    ('customer.admin', 'bill', 'read', 'own'),
    ('customer.finance', 'bill', 'read', 'own'),
    ('agency.admin', 'bill', 'finalize', 'own'),
    ('agency.finance', 'bill', 'finalize', 'own'),
    ('operator.admin', 'bill', 'finalize', 'own'),
    ('operator.finance', 'bill', 'finalize', 'own'),
    ('agency.finance', 'bill', 'export', 'any'),
    ('regulator.finance', 'bill', 'export', 'any'),
    ('operator.finance', 'bill', 'export', 'own'),
    ('customer.finance', 'bill', 'export', 'own'),
    ('agency.admin', 'bill', 'reconcile', 'any'),
    ('agency.finance', 'bill', 'reconcile', 'any'),
    ('regulator.regulator', 'bill', 'reconcile', 'any'),
    ('operator.finance', 'bill', 'reconcile', 'own'),
    ('agency.admin', 'attribution', 'read', 'any'),
    ('agency.finance', 'attribution', 'read', 'any'),
    ('regulator.regulator', 'attribution', 'read', 'any'),
    ('provider.admin', 'attribution', 'read', 'own'),
    ('provider.finance', 'attribution', 'read', 'own'),
    ('provider.data_steward', 'attribution', 'read', 'own'),
    ('agency.admin', 'revenue', 'read', 'any'),
    ('agency.finance', 'revenue', 'read', 'any'),
    ('regulator.regulator', 'revenue', 'read', 'any'),
    ('operator.admin', 'revenue', 'read', 'own'),
    ('operator.finance', 'revenue', 'read', 'own'),
]

_casbin = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
    sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String), sa.column("v5", sa.String),
)


revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('platform_fee_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rates', sa.JSON(), nullable=False),
    sa.Column('vat_included', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('price_cap_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('caps', sa.JSON(), nullable=False),
    sa.Column('vat_included', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('product_categories',
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('usage_events',
    sa.Column('id', sa.String(length=160), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('relation', sa.String(length=10), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issuer_org_id', sa.String(length=40), nullable=False),
    sa.Column('payer_org_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=True),
    sa.Column('purpose_class', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('quantities', sa.JSON(), nullable=False),
    sa.Column('datasets', sa.JSON(), nullable=False),
    sa.Column('product_id', sa.String(length=40), nullable=True),
    sa.Column('entry_id', sa.String(length=40), nullable=True),
    sa.Column('free_reason', sa.Text(), nullable=True),
    sa.Column('trace_id', sa.String(length=32), nullable=True),
    sa.Column('source_id', sa.String(length=160), nullable=False),
    sa.Column('reverses', sa.String(length=160), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('payload_sha256', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reverses')
    )
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_events_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index('ix_usage_events_payer_issuer_time', ['payer_org_id', 'issuer_org_id', 'event_time'], unique=False)

    op.create_table('bills',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('payer_org_id', sa.String(length=40), nullable=False),
    sa.Column('issuer_org_id', sa.String(length=40), nullable=False),
    sa.Column('relation', sa.String(length=10), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.Column('total', sa.String(length=48), nullable=False),
    sa.Column('vat_included', sa.Boolean(), nullable=False),
    sa.Column('vat_rate', sa.String(length=48), nullable=False),
    sa.Column('vat_amount', sa.String(length=48), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.Column('finalized_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finalized_by', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['issuer_org_id'], ['organizations.id'], ),
    sa.ForeignKeyConstraint(['payer_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('payer_org_id', 'issuer_org_id', 'period', name='uq_bills_payer_issuer_period')
    )
    with op.batch_alter_table('bills', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bills_issuer_org_id'), ['issuer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bills_payer_org_id'), ['payer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bills_period'), ['period'], unique=False)

    op.create_table('price_list_entries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('basis', sa.String(length=20), nullable=False),
    sa.Column('unit', sa.String(length=20), nullable=False),
    sa.Column('product_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['category'], ['product_categories.code'], ),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('price_list_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_price_list_entries_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('revenue_caps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('amount', sa.String(length=48), nullable=False),
    sa.Column('vat_included', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('revenue_caps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revenue_caps_operator_org_id'), ['operator_org_id'], unique=False)

    op.create_table('bill_attributions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('bill_id', sa.String(length=40), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('relation', sa.String(length=10), nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=True),
    sa.Column('provider_org_id', sa.String(length=40), nullable=True),
    sa.Column('amount', sa.String(length=48), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bills.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('bill_attributions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bill_attributions_bill_id'), ['bill_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bill_attributions_period'), ['period'], unique=False)

    op.create_table('bill_lines',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('bill_id', sa.String(length=40), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('event_period', sa.String(length=7), nullable=False),
    sa.Column('meter', sa.String(length=20), nullable=False),
    sa.Column('unit', sa.String(length=60), nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=True),
    sa.Column('product_id', sa.String(length=40), nullable=True),
    sa.Column('entry_id', sa.String(length=40), nullable=True),
    sa.Column('segment', sa.String(length=20), nullable=False),
    sa.Column('purpose_class', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('quantity', sa.String(length=48), nullable=False),
    sa.Column('base_quantity', sa.BigInteger(), nullable=False),
    sa.Column('unit_price', sa.String(length=48), nullable=False),
    sa.Column('cap', sa.String(length=48), nullable=True),
    sa.Column('amount', sa.String(length=48), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('events_sha256', sa.String(length=64), nullable=False),
    sa.Column('schedule', sa.String(length=200), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bills.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bill_id', 'line_no', name='uq_bill_lines_bill_line')
    )
    with op.batch_alter_table('bill_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bill_lines_bill_id'), ['bill_id'], unique=False)

    op.create_table('billed_events',
    sa.Column('event_id', sa.String(length=160), nullable=False),
    sa.Column('bill_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bills.id'], ),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('billed_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billed_events_bill_id'), ['bill_id'], unique=False)

    op.create_table('price_list_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unit_price', sa.String(length=48), nullable=False),
    sa.Column('tiers', sa.JSON(), nullable=False),
    sa.Column('package', sa.JSON(), nullable=True),
    sa.Column('vat_included', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['price_list_entries.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('entry_id', 'version', name='uq_price_list_versions_entry_version')
    )
    with op.batch_alter_table('price_list_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_price_list_versions_entry_id'), ['entry_id'], unique=False)

    op.create_table('revenue_excesses',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('revenue', sa.String(length=48), nullable=False),
    sa.Column('effective_max', sa.String(length=48), nullable=False),
    sa.Column('excess', sa.String(length=48), nullable=False),
    sa.Column('bill_id', sa.String(length=40), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bills.id'], ),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('revenue_excesses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revenue_excesses_operator_org_id'), ['operator_org_id'], unique=False)

    op.bulk_insert(_casbin, [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in MATRIX_METERING
    ])


def downgrade() -> None:
    for s, o, a, sc in MATRIX_METERING:
        op.execute(_casbin.delete().where(_casbin.c.ptype == "p", _casbin.c.v0 == s, _casbin.c.v1 == o,
                                          _casbin.c.v2 == a, _casbin.c.v3 == sc))
    with op.batch_alter_table('revenue_excesses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revenue_excesses_operator_org_id'))

    op.drop_table('revenue_excesses')
    with op.batch_alter_table('price_list_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_price_list_versions_entry_id'))

    op.drop_table('price_list_versions')
    with op.batch_alter_table('billed_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billed_events_bill_id'))

    op.drop_table('billed_events')
    with op.batch_alter_table('bill_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bill_lines_bill_id'))

    op.drop_table('bill_lines')
    with op.batch_alter_table('bill_attributions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bill_attributions_period'))
        batch_op.drop_index(batch_op.f('ix_bill_attributions_bill_id'))

    op.drop_table('bill_attributions')
    with op.batch_alter_table('revenue_caps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revenue_caps_operator_org_id'))

    op.drop_table('revenue_caps')
    with op.batch_alter_table('price_list_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_price_list_entries_operator_org_id'))

    op.drop_table('price_list_entries')
    with op.batch_alter_table('bills', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bills_period'))
        batch_op.drop_index(batch_op.f('ix_bills_payer_org_id'))
        batch_op.drop_index(batch_op.f('ix_bills_issuer_org_id'))

    op.drop_table('bills')
    with op.batch_alter_table('usage_events', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_events_payer_issuer_time')
        batch_op.drop_index(batch_op.f('ix_usage_events_operator_org_id'))

    op.drop_table('usage_events')
    op.drop_table('product_categories')
    op.drop_table('price_cap_versions')
    op.drop_table('platform_fee_versions')
