"""products, subscriptions and product calls

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-28 11:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

# Permission rows for products and services (role-in-kind, object, action, scope); docs/permissions.md lists them.
# `own` means: product -> its operator (invoke: the calling customer); subscription and call -> the customer or
# the product's operator; `any` rows are the agency's and the regulator's.
MATRIX_PRODUCTS = [
    ('operator.admin', 'product', 'create', 'own'),
    ('operator.operator', 'product', 'create', 'own'),
    ('operator.admin', 'product', 'change', 'own'),
    ('operator.operator', 'product', 'change', 'own'),
    ('operator.admin', 'product', 'read', 'own'),
    ('operator.operator', 'product', 'read', 'own'),
    ('operator.finance', 'product', 'read', 'own'),
    ('agency.admin', 'product', 'read', 'any'),
    ('agency.reviewer', 'product', 'read', 'any'),
    ('regulator.regulator', 'product', 'read', 'any'),
    ('agency.admin', 'product', 'review', 'any'),
    ('agency.reviewer', 'product', 'review', 'any'),
    ('agency.admin', 'product', 'delist', 'any'),
    ('customer.admin', 'product', 'invoke', 'own'),
    ('customer.customer', 'product', 'invoke', 'own'),
    ('customer.admin', 'subscription', 'create', 'own'),
    ('customer.customer', 'subscription', 'create', 'own'),
    ('customer.admin', 'subscription', 'change', 'own'),
    ('customer.customer', 'subscription', 'change', 'own'),
    ('customer.admin', 'subscription', 'read', 'own'),
    ('customer.customer', 'subscription', 'read', 'own'),
    ('customer.finance', 'subscription', 'read', 'own'),
    ('operator.admin', 'subscription', 'read', 'own'),
    ('operator.operator', 'subscription', 'read', 'own'),
    ('operator.finance', 'subscription', 'read', 'own'),
    ('agency.admin', 'subscription', 'read', 'any'),
    ('regulator.regulator', 'subscription', 'read', 'any'),
    ('agency.admin', 'subscription', 'approve', 'any'),
    ('customer.admin', 'call', 'read', 'own'),
    ('customer.customer', 'call', 'read', 'own'),
    ('customer.finance', 'call', 'read', 'own'),
    ('operator.admin', 'call', 'read', 'own'),
    ('operator.operator', 'call', 'read', 'own'),
    ('operator.finance', 'call', 'read', 'own'),
    ('agency.admin', 'call', 'read', 'any'),
    ('regulator.regulator', 'call', 'read', 'any'),
]

_casbin = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
    sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String), sa.column("v5", sa.String),
)


revision = '0010'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('products',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('entry_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('listed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['entry_id'], ['price_list_entries.id'], ),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.ForeignKeyConstraint(['operator_org_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('operator_org_id', 'name', name='uq_products_operator_name')
    )
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_products_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_products_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_products_status'), ['status'], unique=False)

    op.create_table('subscriptions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('product_id', sa.String(length=40), nullable=False),
    sa.Column('customer_org_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('public_interest_purpose', sa.Text(), nullable=True),
    sa.Column('free_reason', sa.Text(), nullable=True),
    sa.Column('free_approved_by', sa.String(length=40), nullable=True),
    sa.Column('free_approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_org_id'], ['organizations.id'], ),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriptions_customer_org_id'), ['customer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriptions_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriptions_product_id'), ['product_id'], unique=False)

    op.create_table('product_calls',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('product_id', sa.String(length=40), nullable=False),
    sa.Column('subscription_id', sa.String(length=40), nullable=True),
    sa.Column('customer_org_id', sa.String(length=40), nullable=False),
    sa.Column('operator_org_id', sa.String(length=40), nullable=False),
    sa.Column('requested_by', sa.String(length=40), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('run_id', sa.String(length=40), nullable=True),
    sa.Column('entry_id', sa.String(length=40), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.String(length=60), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('result_rows', sa.BigInteger(), nullable=False),
    sa.Column('result_sha256', sa.String(length=64), nullable=True),
    sa.Column('free_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('product_id', 'requested_by', 'idempotency_key', name='uq_product_calls_idempotency'),
    sa.UniqueConstraint('run_id')
    )
    with op.batch_alter_table('product_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_calls_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_calls_customer_org_id'), ['customer_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_calls_operator_org_id'), ['operator_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_product_calls_product_id'), ['product_id'], unique=False)

    op.bulk_insert(_casbin, [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in MATRIX_PRODUCTS
    ])


def downgrade() -> None:
    for s, o, a, sc in MATRIX_PRODUCTS:
        op.execute(_casbin.delete().where(_casbin.c.ptype == "p", _casbin.c.v0 == s, _casbin.c.v1 == o,
                                          _casbin.c.v2 == a, _casbin.c.v3 == sc))
    with op.batch_alter_table('product_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_calls_product_id'))
        batch_op.drop_index(batch_op.f('ix_product_calls_operator_org_id'))
        batch_op.drop_index(batch_op.f('ix_product_calls_customer_org_id'))
        batch_op.drop_index(batch_op.f('ix_product_calls_created_at'))

    op.drop_table('product_calls')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriptions_product_id'))
        batch_op.drop_index(batch_op.f('ix_subscriptions_operator_org_id'))
        batch_op.drop_index(batch_op.f('ix_subscriptions_customer_org_id'))

    op.drop_table('subscriptions')
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_products_status'))
        batch_op.drop_index(batch_op.f('ix_products_operator_org_id'))
        batch_op.drop_index(batch_op.f('ix_products_job_id'))

    op.drop_table('products')
