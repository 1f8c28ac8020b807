"""Proof generation and appends over stored perfect-subtree nodes (RFC 9162 §2.1.3.1 and §2.1.4.1).

A stored node is the root of a perfect subtree: (level L, index i) covers leaves [i·2^L, (i+1)·2^L), and level 0
holds the leaf hashes. Every subtree RFC 6962 names, MTH(D[a:b]), is a fold of at most log2(b-a)+1 such
nodes, so a proof needs O(log n) stored nodes. Generation first plans which nodes it needs (pure arithmetic),
then reads them in one batch, then folds them; `NodeReader` is all the storage it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from disclosure.merkle import EMPTY_ROOT, node_hash, split_point

NodeKey = tuple[int, int]
"""(level, index) of a perfect subtree."""

Plan = list[list[NodeKey]]
"""One entry per proof element: the perfect subtrees whose right-to-left fold is that element."""

_LEVEL_SHIFT = 56


def node_id(level: int, index: int) -> int:
    """One integer per node for storage: level in the top bits, index below (index < 2^56, level < 64)."""
    return (level << _LEVEL_SHIFT) | index


def node_key(ident: int) -> NodeKey:
    """The (level, index) of a stored node id."""
    return ident >> _LEVEL_SHIFT, ident & ((1 << _LEVEL_SHIFT) - 1)


class NodeReader(Protocol):
    """Reads stored node hashes; one call per proof."""

    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]: ...


class ProofError(ValueError):
    """A proof was asked for sizes or indices the tree does not have."""


def subtree_keys(start: int, end: int) -> list[NodeKey]:
    """The perfect subtrees whose fold is MTH(D[start:end]), left to right (`start` aligned as RFC 6962 splits)."""
    keys: list[NodeKey] = []
    while end - start > 0:
        size = end - start
        if size & (size - 1) == 0:
            level = size.bit_length() - 1
            keys.append((level, start >> level))
            break
        k = split_point(size)
        level = k.bit_length() - 1
        keys.append((level, start >> level))
        start += k
    return keys


def fold(keys: Sequence[NodeKey], nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH of the subtree made of `keys` (left to right): H(k0, H(k1, H(k2, ...)))."""
    if not keys:
        return EMPTY_ROOT
    value = nodes[keys[-1]]
    for key in reversed(keys[:-1]):
        value = node_hash(nodes[key], value)
    return value


def root_plan(size: int) -> Plan:
    """The plan for MTH(D[size])."""
    return [subtree_keys(0, size)]


def inclusion_plan(index: int, size: int) -> Plan:
    """The plan for PATH(index, D[size]), leaf to root (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ProofError(f"entry {index} is not in a tree of size {size}")
    start, end = 0, size
    siblings: Plan = []
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            siblings.append(subtree_keys(start + k, end))
            end = start + k
        else:
            siblings.append(subtree_keys(start, start + k))
            start += k
    return list(reversed(siblings))


def consistency_plan(first: int, second: int) -> Plan:
    """The plan for PROOF(first, D[second]) (RFC 9162 §2.1.4.1); empty when first is 0 or equal to second."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    plan: Plan = []
    _subproof(first, 0, second, True, plan)
    return plan


def _subproof(m: int, start: int, end: int, whole: bool, out: Plan) -> None:
    """SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1, appending to `out` (m counts from `start`)."""
    size = end - start
    if m == size:
        if not whole:
            out.append(subtree_keys(start, end))
        return
    k = split_point(size)
    if m <= k:
        _subproof(m, start, start + k, whole, out)
        out.append(subtree_keys(start + k, end))
    else:
        _subproof(m - k, start + k, end, False, out)
        out.append(subtree_keys(start, start + k))


def plan_keys(plan: Plan) -> list[NodeKey]:
    """Every distinct node a plan reads."""
    seen: dict[NodeKey, None] = {}
    for keys in plan:
        for key in keys:
            seen.setdefault(key, None)
    return list(seen)


def evaluate(plan: Plan, reader: NodeReader) -> list[bytes]:
    """Read the plan's nodes in one batch and fold each element."""
    keys = plan_keys(plan)
    nodes = reader.read_nodes(keys) if keys else {}
    missing = [k for k in keys if k not in nodes]
    if missing:
        raise ProofError(f"the log store lacks node(s) {missing[:3]}; it is truncated or damaged")
    return [fold(keys_, nodes) for keys_ in plan]


@dataclass
class Appended:
    """What appending leaves produced: nodes to store, the new right border, size and root."""

    nodes: list[tuple[NodeKey, bytes]]
    frontier: dict[int, bytes]
    size: int
    root: bytes


def frontier_keys(size: int) -> list[NodeKey]:
    """The perfect subtrees on the right border of a tree of `size` (one per set bit), by level."""
    return [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]


def frontier_root(frontier: Mapping[int, bytes]) -> bytes:
    """MTH of a tree from its right border (highest level is leftmost)."""
    if not frontier:
        return EMPTY_ROOT
    levels = sorted(frontier)
    value = frontier[levels[0]]
    for level in levels[1:]:
        value = node_hash(frontier[level], value)
    return value


def append_leaves(size: int, frontier: Mapping[int, bytes], leaf_hashes: Sequence[bytes]) -> Appended:
    """Append leaf hashes to a tree of `size` with right border `frontier`: the new perfect nodes and root."""
    border = dict(frontier)
    if sorted(border) != [lvl for lvl, _ in frontier_keys(size)]:
        raise ProofError(f"the right border given does not fit a tree of size {size}")
    nodes: list[tuple[NodeKey, bytes]] = []
    for h in leaf_hashes:
        level, index, value = 0, size, h
        nodes.append(((0, index), value))
        while index & 1:
            value = node_hash(border.pop(level), value)
            level, index = level + 1, index >> 1
            nodes.append(((level, index), value))
        border[level] = value
        size += 1
    return Appended(nodes=nodes, frontier=border, size=size, root=frontier_root(border))


class MemoryNodes:
    """Nodes in a dict: the offline verifier's, the tests' and the benchmark's store. Counts node reads."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.size = 0
        self.frontier: dict[int, bytes] = {}
        self.reads = 0

    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The stored hashes of `keys` (counted)."""
        self.reads += len(keys)
        return {k: self.nodes[k] for k in keys if k in self.nodes}

    def append(self, leaf_hashes: Sequence[bytes]) -> bytes:
        """Append leaf hashes; returns the new root."""
        done = append_leaves(self.size, self.frontier, leaf_hashes)
        self.nodes.update(done.nodes)
        self.size, self.frontier = done.size, done.frontier
        return done.root
