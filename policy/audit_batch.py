"""A run's new sets, prepared together for one ledger of the release audit (policy/audit_ledger.py).

`prepare` reads a ledger between cells and computes, in one vector step over the run's new sets (their members
concatenated), what `Ledger.try_add` would otherwise compute set by set with some forty numpy calls each:

- **refinement**: the atoms each set touches, and whether it is already a union of atoms (then refinement changes
  nothing: no atom splits). Valid while the ledger's `_epoch` is unchanged, that is, until any later set of the run
  splits an atom; `try_add` refines set by set from then on.
- **check 3's window over the sets released before the run**: how many of them lie in the size window |S′| − |S| ∈
  (−k, k) (the budget charge) and which pass check 3's pre-filter (smaller ones whose smallest entity lies in S;
  larger ones that bracket S and hold its smallest entity), in (size, index) order. Sets registered during the run
  (indexes from `base` on) are tested by `Ledger._complements` in a Python loop when the set is checked, so a set
  sees every set accepted before it, as in the per-set path.

A hint is a pure function of the ledger's state when it was made and of the set; it never decides. The ledger uses
each part only while its premise holds (same ledger object, same epoch, sets below `base` unchanged: only pending
sets, all at or above `base`, are ever removed), and charges the work budget exactly what the per-set path charges,
so decisions, violations and the budget spent are those of the per-set path (docs/output-control.md, "A run's sets
prepared together").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from policy import audit_kernel

if TYPE_CHECKING:
    from policy.audit_ledger import Ledger

MIN_BATCH = 2  # fewer new sets than this: the per-set path (the vector step costs about as much as two sets)
MAX_MEMBERS = 4096  # larger sets take the per-set path (their own work outweighs the numpy calls a batch saves)


@dataclass(slots=True)
class Hint:
    """What `prepare` found for one new set (see module doc)."""

    members: np.ndarray  # the set's entities, sorted (uint32)
    epoch: int  # the ledger's `_epoch` when prepared
    atoms: np.ndarray | None  # the atoms the set is the union of (sorted), or None when refinement would split
    large: np.ndarray | None  # of those, the large ones (weight >= k; sorted): the set's row of L (None with atoms)
    base: int  # sets released before the run (indexes below it were in the window computed here)
    window: int  # of those, the sets in check 3's size window
    candidates: list[tuple[int, int]]  # of those, (size, index) of the pre-filtered candidates, in that order


def prepare(ledger: Ledger, sets: Sequence[BitMap]) -> dict[int, Hint]:
    """Hints for the sets of a run that `ledger` does not hold yet, keyed by `id(entities)` (empty when there are
    fewer than `MIN_BATCH`)."""
    new: list[BitMap] = []
    seen: set[int] = set()
    for entities in sets:
        if (id(entities) not in seen and 0 < len(entities) <= MAX_MEMBERS
                and not ledger.has(entities)):
            seen.add(id(entities))
            new.append(entities)
    n = len(new)
    if n < MIN_BATCH:
        return {}
    members = [np.frombuffer(entities.to_array(), dtype=np.uint32) for entities in new]
    lengths = np.array([len(m) for m in members], dtype=np.int64)
    flat = np.concatenate(members)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    lows, highs = flat[starts], flat[ends - 1]
    entities64 = flat.astype(np.int64)  # (numpy's index type: a uint32 index array is converted at every use)
    atoms, large = _union_atoms(ledger, entities64, lengths, n)
    base, k, by_card = len(ledger.sets), ledger.k, ledger._by_card
    bounds = by_card.searchsorted(np.concatenate(((lengths - k + 1) << 32, lengths << 32, (lengths + 1) << 32,
                                                  (lengths + k) << 32))).reshape(4, n)
    window = (bounds[3] - bounds[0]).tolist()
    found: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    # smaller candidates: a smallest entity inside the set (one search over (set, member) keys of the whole run)
    where, of = _ranges(bounds[0], bounds[1])
    if len(where):
        indexes = by_card[where] & 0xFFFFFFFF
        mins = ledger._mins[indexes].astype(np.int64)
        keys = owner << 32 | entities64
        query = of << 32 | mins
        place = np.minimum(keys.searchsorted(query), len(keys) - 1)
        hit = keys[place] == query
        for at, index, size in zip(of[hit].tolist(), indexes[hit].tolist(), ledger._cards[indexes[hit]].tolist(),
                                   strict=True):
            found[at].append((size, index))
    # larger candidates: bracketing the set, then holding its smallest entity
    where, of = _ranges(bounds[2], bounds[3])
    if len(where):
        indexes = by_card[where] & 0xFFFFFFFF
        around = (ledger._mins[indexes] <= lows[of]) & (ledger._maxs[indexes] >= highs[of])
        released, low_of = ledger.sets, lows.tolist()
        for at, index, size in zip(of[around].tolist(), indexes[around].tolist(),
                                   ledger._cards[indexes[around]].tolist(), strict=True):
            if low_of[at] in released[index]:
                found[at].append((size, index))
    epoch = ledger._epoch
    return {id(entities): Hint(members[i], epoch, atoms[i], large[i], base, window[i], found[i])
            for i, entities in enumerate(new)}


def _ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions start_i .. stop_i - 1 of every i, concatenated, and the i of each."""
    lengths = stops - starts
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    of = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths), of


def _union_atoms(ledger: Ledger, flat: np.ndarray, lengths: np.ndarray,
                 n: int) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """For each set (members `flat`, `lengths` of them per set, in order), the sorted atoms it is the union
    of, or None when it is not one (refinement would split an atom) or shares an atom with a later set of the
    batch (not computed here).

    Computed in one kernel call (`audit_kernel.union_atoms`, two passes over the members). The distinct atoms
    come from one scatter of positions over the atoms (`Ledger._pos`): an atom's last
    occurrence in the batch. A set none of whose atoms occurs again in a later set holds the last occurrence of
    each of its atoms, so those are exactly its distinct atoms; a set sharing an atom with a later one is left to
    the per-set path. A set is a union of atoms exactly when it touches no atom 0 and its atoms' sizes total its
    own (the argument of `Ledger._split`). Also returns, for those sets, their large atoms (`Ledger._add_row`'s
    columns: weight at least k; atom 0 is not among them)."""
    result: list[np.ndarray | None] = [None] * n
    large: list[np.ndarray | None] = [None] * n
    ledger._reserve(len(ledger.weight))
    union, atoms, bounds, heavy, heavy_bounds = audit_kernel.union_atoms(
        ledger.atom_of, ledger.size, flat, lengths, ledger.count, ledger._weights, ledger.k, ledger._pos)
    at, heavy_at = bounds.tolist(), heavy_bounds.tolist()
    for i in union.nonzero()[0].tolist():
        result[i] = atoms[at[i]: at[i + 1]]
        large[i] = heavy[heavy_at[i]: heavy_at[i + 1]]
    return result, large
