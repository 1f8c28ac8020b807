"""RFC 6962 / RFC 9162 Merkle tree hashing, and verification of inclusion and consistency proofs.

leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), empty tree = SHA-256(""). The verifiers
follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; proof generation over stored nodes is in `disclosure.proofs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than `n` (n >= 2): where RFC 6962 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes, in O(n) time and O(log n) memory (a stack of perfect subtrees)."""
    stack: list[tuple[int, bytes]] = []  # (size, hash) of perfect subtrees, sizes strictly decreasing
    for h in hashes:
        size, value = 1, h
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, value = left_size + size, node_hash(left, value)
        stack.append((size, value))
    if not stack:
        return EMPTY_ROOT
    _, root = stack.pop()
    while stack:
        _, left = stack.pop()
        root = node_hash(left, root)
    return root


def roots_at(hashes: Iterable[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """MTH of the first `size` leaves for each of `sizes`, in one pass over the leaf hashes."""
    wanted = sorted(set(sizes))
    out: dict[int, bytes] = {}
    if 0 in wanted:
        out[0] = EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []
    pending = [s for s in wanted if s > 0]
    for count, h in enumerate(hashes, start=1):
        if not pending:
            break
        size, value = 1, h
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, value = left_size + size, node_hash(left, value)
        stack.append((size, value))
        if count == pending[0]:
            pending.pop(0)
            root = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                root = node_hash(left, root)
            out[count] = root
    return out


def verify_inclusion(index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show that `leaf` (a leaf hash) is entry `index` of the tree `root`?"""
    if index < 0 or index >= tree_size or any(len(p) != HASH_BYTES for p in proof):
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False  # the proof is longer than the path
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does `proof` show that the tree `first_root` of size `first` is a prefix of
    the tree `second_root` of size `second`?"""
    if first < 0 or second < first or any(len(p) != HASH_BYTES for p in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # first is an exact power of two: its root starts the path
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
