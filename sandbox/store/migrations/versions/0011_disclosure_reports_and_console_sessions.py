"""disclosure reports and console sessions

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-28 11:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

# Permission rows added by this revision (role-in-kind, object, action, scope); docs/permissions.md lists them.
# Published disclosures are public; drafts are read by the agency and regulators; the agency publishes.
MATRIX_0011 = [
    ('agency.admin', 'disclosure', 'read_draft', 'any'),
    ('agency.reviewer', 'disclosure', 'read_draft', 'any'),
    ('agency.finance', 'disclosure', 'read_draft', 'any'),
    ('regulator.regulator', 'disclosure', 'read_draft', 'any'),
    ('agency.admin', 'disclosure', 'publish', 'any'),
]

_casbin = sa.table(
    "casbin_rule",
    sa.column("ptype", sa.String), sa.column("v0", sa.String), sa.column("v1", sa.String),
    sa.column("v2", sa.String), sa.column("v3", sa.String), sa.column("v4", sa.String), sa.column("v5", sa.String),
)

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('disclosures',
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('cut_off', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checkpoint_size', sa.BigInteger(), nullable=False),
    sa.Column('report', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.JSON(), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_by', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('period'),
    sa.UniqueConstraint('sha256')
    )
    op.create_table('console_sessions',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=24), nullable=False),
    sa.Column('principal_id', sa.String(length=40), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], ),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_key_id'), ['key_id'], unique=False)

    op.bulk_insert(_casbin, [
        {"ptype": "p", "v0": s, "v1": o, "v2": a, "v3": sc, "v4": "", "v5": ""} for s, o, a, sc in MATRIX_0011
    ])


def downgrade() -> None:
    for s, o, a, sc in MATRIX_0011:
        op.execute(_casbin.delete().where(_casbin.c.ptype == "p", _casbin.c.v0 == s, _casbin.c.v1 == o,
                                          _casbin.c.v2 == a, _casbin.c.v3 == sc))
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_key_id'))
    op.drop_table('console_sessions')
    op.drop_table('disclosures')
