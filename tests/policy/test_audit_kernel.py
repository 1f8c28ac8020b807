"""The release audit's compiled kernels (policy/audit_kernel.py): the same arithmetic and the same L as Python."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest
from pyroaring import BitMap

from policy import audit_batch, audit_kernel
from policy.audit_ledger import Ledger
from policy.audit_rows import Budget, as_row

PRIMES = (2, 3, 5, 65537, 2147483629, 2147483647)  # up to 2^31 - 1, the largest prime below 2^31


def test_mulmod_and_the_inverse_agree_with_python_integers_at_the_edges_of_31_bit_residues() -> None:
    for p in PRIMES:
        edges = sorted(x for x in {0, 1, 2, p - 2, p - 1, p // 2, (p + 1) // 2, 1 << 30, (1 << 30) + 1} if 0 <= x < p)
        for a in edges:
            for b in edges:
                assert audit_kernel.mulmod(a, b, p) == a * b % p, (p, a, b)
            if a:
                assert audit_kernel.inverse_mod(a, p) == pow(a, -1, p), (p, a)


class _LoopLedger(Ledger):
    """A ledger that reduces rows in Python dictionaries (the path of snapshots with a 61-bit prime)."""

    @property
    def _vectorized(self) -> bool:
        return False


def _l_state(ledger: Ledger) -> dict[int, tuple[dict[int, int], dict[int, int], int]]:
    return {p: ({a: int(v) for a, v in e.row.items()}, {s: int(v) for s, v in e.y.items()}, e.order)
            for p, e in ledger.lrows.items()}


def test_the_compiled_reduction_leaves_l_and_every_decision_exactly_as_the_python_loop_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Same prime, same sets: every decision, every row of L with its combination and order, and V_s are the
    same whether rows are reduced by `audit_kernel.reduce_row` or by the dictionary loop; the comparison covers
    rows reduced, dependencies, reducers met after an atom split (NEED) and a full scratch (GROW)."""
    outcomes: collections.Counter[int] = collections.Counter()
    reduce_row = audit_kernel.reduce_row

    def counting(*args: Any) -> Any:
        result = reduce_row(*args)
        outcomes[result[0]] += 1
        return result

    monkeypatch.setattr(audit_kernel, "reduce_row", counting)
    rng = np.random.default_rng(20261129)
    blocks = [list(range(5 * b + 1, 5 * b + 6)) for b in range(40)]  # large atoms, so that L fills up
    for p in (2147483647, 5):
        kernel, loop = Ledger(3, modulus=p), _LoopLedger(3, modulus=p)
        refused = 0
        for step in range(160):
            chosen = [e for b in rng.choice(40, int(rng.integers(2, 14)), replace=False) for e in blocks[int(b)]]
            if step % 9 == 8:  # now and then a set that splits atoms
                chosen = chosen[1:]
            entities = BitMap(chosen)
            if step % 3 == 0:
                kernel._touched = np.zeros(1, dtype=np.int64)  # the scratch grows during the reduction
            first, second = kernel.try_add(entities, Budget(1 << 40)), loop.try_add(entities, Budget(1 << 40))
            assert (first is None) == (second is None), step
            refused += first is not None
            if first is not None or rng.random() < 0.1:
                kernel.rollback()
                loop.rollback()
            else:
                kernel.commit()
                loop.commit()
            assert _l_state(kernel) == _l_state(loop), (p, step)
            assert kernel.vrows == loop.vrows, (p, step)
        assert refused > 0 and len(kernel.lrows) > 15, (p, refused, len(kernel.lrows))
    for outcome in (audit_kernel.REDUCED, audit_kernel.DEPENDENT, audit_kernel.NEED,
                    audit_kernel.GROW):
        assert outcomes[outcome] > 0, outcome


def _check_pool(ledger: Ledger) -> int:
    """Every row of L is in the pool as it is, or marked absent; returns how many are present."""
    ledger._pool_flush()
    present = 0
    for pivot, entry in ledger.lrows.items():
        start, length, ystart, ylength = (int(x) for x in ledger._where[:, pivot])
        if length < 0:
            continue
        present += 1
        assert as_row(ledger._pcols[start: start + length], ledger._pvals[start: start + length]) == entry.row
        assert as_row(ledger._psets[ystart: ystart + ylength], ledger._pweights[ystart: ystart + ylength]) == entry.y
    return present


def test_the_pool_holds_every_row_of_l_as_it_is_after_splits_rollbacks_and_snapshots() -> None:
    import pickle

    rng = np.random.default_rng(7)
    ledger = Ledger(3, modulus=2147483647)
    present = 0
    blocks = [list(range(5 * b + 1, 5 * b + 6)) for b in range(30)]
    for step in range(120):
        chosen = [e for b in rng.choice(30, int(rng.integers(2, 12)), replace=False) for e in blocks[int(b)]]
        entities = BitMap(chosen[1:] if step % 7 == 6 else chosen)
        violation = ledger.try_add(entities, Budget(1 << 40))
        if violation is not None or rng.random() < 0.2:
            ledger.rollback()
        else:
            ledger.commit()
        present += _check_pool(ledger)
        if step % 40 == 39:
            ledger = pickle.loads(pickle.dumps(ledger))
            assert _check_pool(ledger) == len(ledger.lrows)  # (a snapshot's rows are all written at load)
    assert present > 100


def test_warming_compiles_the_kernels_for_the_types_the_ledger_calls_them_with() -> None:
    """After `warm`, a ledger's audits add no specialization (one would be compiled during an audit)."""
    audit_kernel.warm()
    kernels = (audit_kernel.reduce_row, audit_kernel.pool_write, audit_kernel.quick_place,
               audit_kernel.count_columns, audit_kernel.union_atoms)
    before = [len(kernel.signatures) for kernel in kernels]
    rng = np.random.default_rng(3)
    ledger = Ledger(3)
    blocks = [list(range(5 * b + 1, 5 * b + 6)) for b in range(30)]
    for _ in range(60):
        entities = BitMap(e for b in rng.choice(30, int(rng.integers(2, 12)), replace=False) for e in blocks[int(b)])
        if ledger.try_add(entities, Budget(1 << 40)) is None:
            ledger.commit()
        else:
            ledger.rollback()
    assert len(ledger.lrows) > 5
    sets = [BitMap(e for b in rng.choice(30, 3, replace=False) for e in blocks[int(b)]) for _ in range(6)]
    assert any(hint.atoms is not None for hint in audit_batch.prepare(ledger, sets).values())
    assert [len(kernel.signatures) for kernel in kernels] == before


def _union_atoms_in_numpy(ledger: Ledger, flat: np.ndarray, lengths: np.ndarray) -> list[Any]:
    """The vector steps `audit_batch._union_atoms` took before `audit_kernel.union_atoms` (the reference)."""
    n = len(lengths)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    inside = flat < ledger.size
    owners = ledger.atom_of[np.where(inside, flat, 0)]
    owners[~inside] = 0
    scratch = np.zeros(len(ledger.weight) + 1, dtype=np.int64)
    order = np.arange(len(flat), dtype=np.int64)
    scratch[owners] = order
    last = scratch[owners]
    shared = np.zeros(n, dtype=bool)
    shared[owner[owner[last] != owner]] = True
    kept = (last == order).nonzero()[0]
    width = len(ledger.weight)
    keys = np.sort(owner[kept] * width + owners[kept])
    sets_of, atoms = keys // width, keys % width
    bounds = np.concatenate(([0], np.cumsum(np.bincount(sets_of, minlength=n))))
    totals = np.bincount(sets_of, weights=ledger.count[atoms], minlength=n)
    zero = np.bincount(sets_of[atoms == 0], minlength=n) > 0
    union = ~shared & ~zero & (totals == lengths)
    out: list[Any] = []
    for i in range(n):
        if union[i]:
            mine = atoms[bounds[i]: bounds[i + 1]]
            out.append((mine.tolist(), mine[ledger._weights[mine] >= ledger.k].tolist()))
        else:
            out.append(None)
    return out


def test_a_runs_unions_of_atoms_and_their_large_atoms_are_those_of_the_vector_steps() -> None:
    """`audit_kernel.union_atoms` (through `audit_batch._union_atoms`) finds, for every set of a run, whether it
    is a union of atoms no later set shares, its atoms and its large atoms, as the numpy steps it replaced did: on
    random ledgers, with sets that share atoms, split them, touch unseen entities or entity 0."""
    rng = np.random.default_rng(29)
    unions = others = 0
    for trial in range(150):
        ledger = Ledger(int(rng.integers(1, 6)))
        blocks = [list(range(4 * b, 4 * b + 4)) for b in range(100)]
        for _ in range(int(rng.integers(0, 60))):
            chosen = rng.choice(100, int(rng.integers(1, 8)), replace=False)
            ledger.refine(BitMap(e for b in chosen for e in blocks[int(b)]), Budget(1 << 40))
        sets = []
        for _ in range(int(rng.integers(1, 12))):
            if rng.random() < 0.7:  # unions of blocks (often of atoms), else random entities (often splitting)
                chosen = rng.choice(105, int(rng.integers(1, 4)), replace=False)
                members = sorted({e for b in chosen for e in range(4 * int(b), 4 * int(b) + 4)})
            else:
                members = sorted({int(e) for e in rng.integers(0, 420, int(rng.integers(1, 30)))})
            sets.append(np.array(members, dtype=np.int64))
        lengths = np.array([len(m) for m in sets], dtype=np.int64)
        flat = np.concatenate(sets)
        expected = _union_atoms_in_numpy(ledger, flat, lengths)
        atoms, large = audit_batch._union_atoms(ledger, flat, lengths, len(sets))
        got = [None if a is None else (a.tolist(), lg.tolist()) for a, lg in zip(atoms, large, strict=True)]
        assert got == expected, trial
        unions += sum(e is not None for e in expected)
        others += sum(e is None for e in expected)
    assert unions > 100 and others > 300
