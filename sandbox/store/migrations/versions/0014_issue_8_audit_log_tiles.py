"""the audit log's Merkle tree is stored as tiles (levels 0, 4, 8, …; 16 hashes a row) instead of every node

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-28 15:00:00.000000

Self-contained on purpose (the layout constants are disclosure.tiles' and disclosure.proofs' at this revision):
upgrade regroups the stored nodes at levels that are multiples of 4 into tiles; downgrade rebuilds every
perfect-subtree node from the level-0 tiles (the leaf hashes).
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

_SHIFT = 56  # node and tile ids: level << 56 | index
_HEIGHT = 4
_WIDTH = 1 << _HEIGHT
_CHUNK = 20_000


def upgrade() -> None:
    tiles = op.create_table(
        "audit_log_tiles",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    conn = op.get_bind()
    grouped: dict[int, bytearray] = {}
    for ident, value in conn.execute(sa.text("SELECT id, hash FROM audit_log_nodes ORDER BY id")):
        level, index = ident >> _SHIFT, ident & ((1 << _SHIFT) - 1)
        if level % _HEIGHT:
            continue
        tile = (level // _HEIGHT) << _SHIFT | index >> _HEIGHT
        data = grouped.setdefault(tile, bytearray())
        if len(data) != (index % _WIDTH) * 32:
            raise RuntimeError(f"audit_log_nodes lacks nodes before level {level} index {index}")
        data += bytes(value)
    rows = [{"id": k, "hashes": bytes(v)} for k, v in grouped.items()]
    for start in range(0, len(rows), _CHUNK):
        op.bulk_insert(tiles, rows[start:start + _CHUNK])
    op.drop_table("audit_log_nodes")


def downgrade() -> None:
    nodes = op.create_table(
        "audit_log_nodes",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    conn = op.get_bind()
    border: dict[int, bytes] = {}
    size = 0
    out: list[dict[str, object]] = []
    for (data,) in conn.execute(sa.text("SELECT hashes FROM audit_log_tiles WHERE id < :top ORDER BY id"),
                                {"top": 1 << _SHIFT}):
        for offset in range(0, len(data), 32):
            level, index, value = 0, size, bytes(data[offset:offset + 32])
            out.append({"id": index, "hash": value})
            while index & 1:
                value = hashlib.sha256(b"\x01" + border.pop(level) + value).digest()
                level, index = level + 1, index >> 1
                out.append({"id": level << _SHIFT | index, "hash": value})
            border[level] = value
            size += 1
        if len(out) >= _CHUNK:
            op.bulk_insert(nodes, out)
            out = []
    if out:
        op.bulk_insert(nodes, out)
    op.drop_table("audit_log_tiles")
