"""tamper-evident audit log: record fields, Merkle nodes, log state, checkpoints, audit permissions

Revision ID: 0004
Revises: 0006
Create Date: 2026-11-28 08:20:14.375679
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0006'
branch_labels = None
depends_on = None

# Who reads the audit log (own = records whose actor or resource belongs to the caller's organization), and who
# exports it. Frozen: change it in a new migration; docs/permissions.md is its human copy.
AUDIT_ROWS = [
    ('operator.operator', 'audit', 'read', 'own'),
    ('operator.admin', 'audit', 'read', 'own'),
    ('platform.admin', 'audit', 'export', 'any'),
    ('agency.admin', 'audit', 'export', 'any'),
    ('regulator.regulator', 'audit', 'export', 'any'),
    ('operator.operator', 'audit', 'export', 'own'),
    ('operator.admin', 'audit', 'export', 'own'),
]


def _casbin() -> sa.TableClause:
    return sa.table(
        "casbin_rule",
        sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
        sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String),
        sa.column("v5", sa.String),
    )


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kid', sa.String(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('timestamp', name='uq_audit_checkpoints_timestamp')
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_checkpoints_size'), ['size'], unique=False)

    op.create_table('audit_log_nodes',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_log_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('actor_key_id', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('resource_org_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('grant_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('datasets', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('sql_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('result_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('rows', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('client', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('trace_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor_org_id'), ['actor_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_resource_org_id'), ['resource_org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_trace_id'), ['trace_id'], unique=False)
        batch_op.create_unique_constraint('uq_audit_events_seq', ['seq'])

    # Records written before this revision: an unexpected failure was recorded as 'error'; it is now 'failed'.
    # They have no seq yet; the sequencer appends them to the log, in id order, on its first run.
    op.execute("UPDATE audit_events SET decision = 'failed' WHERE decision = 'error'")
    op.bulk_insert(_casbin(), [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in AUDIT_ROWS
    ])


def downgrade() -> None:
    casbin = _casbin()
    for s, o, a, sc in AUDIT_ROWS:
        op.execute(casbin.delete().where(casbin.c.ptype == "p", casbin.c.v0 == s, casbin.c.v1 == o,
                                         casbin.c.v2 == a, casbin.c.v3 == sc))
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_audit_events_seq', type_='unique')
        batch_op.drop_index(batch_op.f('ix_audit_events_trace_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_resource_org_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_org_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))
        batch_op.drop_column('trace_id')
        batch_op.drop_column('client')
        batch_op.drop_column('rows')
        batch_op.drop_column('result_sha256')
        batch_op.drop_column('sql_sha256')
        batch_op.drop_column('datasets')
        batch_op.drop_column('grant_id')
        batch_op.drop_column('resource_org_id')
        batch_op.drop_column('actor_key_id')
        batch_op.drop_column('seq')

    op.drop_table('audit_log_state')
    op.drop_table('audit_log_nodes')
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_checkpoints_size'))

    op.drop_table('audit_checkpoints')
