"""Compiled kernels of the release audit (numba): a new row's reduction against L modulo the ledger's prime.

`reduce_row` does in one call what `Ledger._reduce_mod`, the fresh-column test and Markowitz's choice did in some
forty numpy calls per row and a dozen per reducer: the same arithmetic, entry by entry, in the same order
(tests/policy/test_audit_kernel.py compares the ledger's L and decisions with the Python loop's).
L is read from a pool (`Ledger._pool_flush`): each row's columns, values, sets and weights as slices of four flat
arrays, located by pivot atom.

Residues are below 2^31 (`Ledger._vectorized`: the prime has 31 bits), so a product of two residues is below
2^62 and `acc + g * value` fits in int64 (`mulmod` states it once; numba has no wider integer).

Numba compiles each kernel at its first call (seconds) and caches the machine code on disk (`cache=True`: beside
this file in `__pycache__`, or, where that is not writable, in numba's user cache directory under $HOME;
`NUMBA_CACHE_DIR` sets it; with none writable, numba would refuse to cache, so `_kernel` then compiles without a
cache, at every start). `warm` compiles or loads them ahead of the first audit (`sandbox/app` calls it off the
request path at start-up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np


def _kernel(function: Callable[..., Any]) -> Any:
    """`numba.njit`, cached on disk where numba finds a writable directory (else compiled at every start: numba
    refuses `cache=True` when neither this package's `__pycache__`, nor NUMBA_CACHE_DIR, nor the user's cache
    directory is writable)."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


NO_PIVOT = 1 << 62  # `Ledger._pivot_order` of a column that is no pivot of L
MAX_MODULUS = 1 << 31  # residues below this: a product of two fits in int64

# `reduce_row`'s outcome
UNCHANGED = 0  # the row meets no pivot of L: insert it as it is (Markowitz's choice by the caller)
FRESH = 1  # the row has a column no row of L touches: insert it unreduced, pivoted at `place`
REDUCED = 2  # reduced, scaled to 1 at Markowitz's pivot `place`: insert it
DEPENDENT = 3  # reduced to zero: (sets, weights) is the combination of released sets, unscaled


@_kernel
def mulmod(a: int, b: int, modulus: int) -> int:
    """a · b modulo `modulus`, for residues below 2^31 (the product is below 2^62: no overflow in int64)."""
    return (a * b) % modulus


@_kernel
def inverse_mod(a: int, modulus: int) -> int:
    """The inverse of `a` (not a multiple of the prime `modulus`) modulo `modulus` (extended Euclid; the
    intermediate values stay below `modulus` in absolute value)."""
    r0, r1 = modulus, a % modulus
    s0, s1 = 0, 1
    while r1 != 0:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    return s0 % modulus


# `reduce_row`'s state between calls (`state`): a call returns NEED when it meets a reducer that is not in the
# pool (`where[1, atom] < 0`: changed since the pool was written), GROW when `touched` is full; the caller writes
# that row or grows that array and calls again with the same state, and the reduction goes on where it stopped
PHASE, HEAP, HIDDEN, USED, APPLIED, SPENT, ATOM = range(7)
NEED = 4
GROW = 5


@_kernel
def _sift_down(orders: np.ndarray, atoms: np.ndarray, size: int) -> None:
    """Restore the heap property of `orders` (with `atoms` alongside) from the root, over `size` entries."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        if left + 1 < size and orders[left + 1] < orders[left]:
            child = left + 1
        if orders[child] >= orders[i]:
            return
        orders[i], orders[child] = orders[child], orders[i]
        atoms[i], atoms[child] = atoms[child], atoms[i]
        i = child


@_kernel
def _push(orders: np.ndarray, atoms: np.ndarray, size: int, order: int, atom: int) -> None:
    """Push (order, atom) on the heap of `size` entries (orders are distinct: one row of L per order)."""
    i = size
    orders[i], atoms[i] = order, atom
    while i > 0:
        parent = (i - 1) // 2
        if orders[parent] <= orders[i]:
            return
        orders[i], orders[parent] = orders[parent], orders[i]
        atoms[i], atoms[parent] = atoms[parent], atoms[i]
        i = parent


@_kernel
def reduce_row(keys: np.ndarray, values: np.ndarray, ykeys: np.ndarray, yvalues: np.ndarray,
               colcount: np.ndarray, order_of: np.ndarray, where: np.ndarray, pcols: np.ndarray,
               pvals: np.ndarray, psets: np.ndarray, pweights: np.ndarray, acc: np.ndarray, pos: np.ndarray,
               yacc: np.ndarray, work: np.ndarray, touched: np.ndarray, state: np.ndarray,
               modulus: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Reduce a row over large atoms (distinct `keys`, residues `values`; it stands for Σ yvalues · sets ykeys)
    against L (pivots: `order_of`; rows: the pool, row of pivot a at `where[:, a]` = start, length, y start,
    y length) modulo `modulus`. Returns (outcome, columns, values, sets, weights, place): see the outcome
    constants (and NEED, GROW above); `state[SPENT]` is the budget the reduction costs (the entries of the
    reducers applied). `acc` (over atoms) and `yacc` (over sets) are zero scratch arrays and are zero again when
    the reduction ends; `pos` is scratch; `order_of` is restored; `work` (6 rows, one entry per atom) holds the
    heap, the hidden pivots and the reducers applied between calls."""
    empty64 = np.zeros(0, dtype=np.int64)
    empty32 = np.zeros(0, dtype=np.int32)
    heap_orders, heap_atoms, hidden_atoms, hidden_orders = work[0], work[1], work[2], work[3]
    reducers, factors = work[4], work[5]  # (the reducers by pivot: a pool rebuilt between calls moves them)
    n = len(keys)
    if state[PHASE] == 0:
        for i in range(n):  # a column no row of L touches: the first one
            if colcount[keys[i]] == 0:
                return FRESH, empty64, empty32, empty32, empty32, i
        # pivots met, queued once each: their order is hidden (NO_PIVOT) in `order_of` until the end
        size = 0
        for i in range(n):
            atom = keys[i]
            order = order_of[atom]
            if order != NO_PIVOT:
                _push(heap_orders, heap_atoms, size, order, atom)
                hidden_atoms[size], hidden_orders[size] = atom, order
                size += 1
                order_of[atom] = NO_PIVOT
        if size == 0:
            return UNCHANGED, empty64, empty32, empty32, empty32, 0
        for i in range(n):
            acc[keys[i]] = values[i]
            touched[i] = keys[i]
        state[PHASE], state[HEAP], state[HIDDEN], state[USED], state[APPLIED], state[SPENT] = 1, size, size, n, 0, 0
    size, hidden, used, applied = state[HEAP], state[HIDDEN], state[USED], state[APPLIED]
    while size:
        atom = heap_atoms[0]
        factor = acc[atom]
        start = length = 0
        if factor != 0:
            start, length = where[0, atom], where[1, atom]
            if length < 0 or used + length > len(touched):  # not in the pool, or no room: come back
                state[HEAP], state[HIDDEN], state[USED], state[APPLIED] = size, hidden, used, applied
                state[ATOM] = atom
                return (NEED if length < 0 else GROW), empty64, empty32, empty32, empty32, 0
        size -= 1  # pop
        heap_orders[0], heap_atoms[0] = heap_orders[size], heap_atoms[size]
        _sift_down(heap_orders, heap_atoms, size)
        if factor == 0:
            continue
        ylength = where[3, atom]
        state[SPENT] += length + ylength
        g = modulus - factor
        for j in range(start, start + length):
            column = pcols[j]
            acc[column] = (acc[column] + mulmod(pvals[j], g, modulus)) % modulus
            touched[used] = column
            used += 1
            order = order_of[column]
            if order != NO_PIVOT:
                _push(heap_orders, heap_atoms, size, order, column)
                size += 1
                hidden_atoms[hidden], hidden_orders[hidden] = column, order
                hidden += 1
                order_of[column] = NO_PIVOT
        if ylength:
            reducers[applied], factors[applied] = atom, g
            applied += 1
    state[PHASE] = 0
    for i in range(hidden):
        order_of[hidden_atoms[i]] = hidden_orders[i]
    # the distinct columns in order of last occurrence (as `audit_rows.distinct`), without the zeros
    for i in range(used):
        pos[touched[i]] = i
    kept = 0
    for i in range(used):
        column = touched[i]
        if pos[column] == i and acc[column] != 0:
            kept += 1
    columns = np.empty(kept, dtype=np.int64)
    residues = np.empty(kept, dtype=np.int64)
    kept = 0
    for i in range(used):
        column = touched[i]
        if pos[column] == i:
            if acc[column] != 0:
                columns[kept] = column
                residues[kept] = acc[column]
                kept += 1
            acc[column] = 0
    # the combination of released sets: Σ factor · y over the reducers applied (sorted, without zeros), summed
    # over a dense array of the released sets; the row's own y alone when no reducer has one
    if applied == 0:
        count = 0
        for i in range(len(ykeys)):
            if yvalues[i] % modulus != 0:
                count += 1
        sets = np.empty(count, dtype=np.int32)
        weights = np.empty(count, dtype=np.int32)
        count = 0
        for i in range(len(ykeys)):
            if yvalues[i] % modulus != 0:
                sets[count] = ykeys[i]
                weights[count] = yvalues[i] % modulus
                count += 1
    else:
        total = len(ykeys)
        for a in range(applied):
            total += where[3, reducers[a]]
        every = np.empty(total, dtype=np.int64)
        for i in range(len(ykeys)):
            yacc[ykeys[i]] = (yacc[ykeys[i]] + yvalues[i] % modulus) % modulus
            every[i] = ykeys[i]
        filled = len(ykeys)
        for a in range(applied):
            g = factors[a]
            ystart = where[2, reducers[a]]
            for j in range(ystart, ystart + where[3, reducers[a]]):
                index = psets[j]
                yacc[index] = (yacc[index] + mulmod(pweights[j], g, modulus)) % modulus
                every[filled] = index
                filled += 1
        every.sort()
        count = 0
        for i in range(total):
            if (i == 0 or every[i] != every[i - 1]) and yacc[every[i]] != 0:
                count += 1
        sets = np.empty(count, dtype=np.int32)
        weights = np.empty(count, dtype=np.int32)
        count = 0
        for i in range(total):
            index = every[i]
            if i == 0 or index != every[i - 1]:
                if yacc[index] != 0:
                    sets[count] = index
                    weights[count] = yacc[index]
                    count += 1
                yacc[index] = 0
    if kept == 0:
        return DEPENDENT, columns, residues.astype(np.int32), sets, weights, 0
    # Markowitz's pivot: the column fewest rows of L touch, the lowest atom among those; scaled to 1 there
    place = 0
    for i in range(1, kept):
        if colcount[columns[i]] < colcount[columns[place]] or (
                colcount[columns[i]] == colcount[columns[place]] and columns[i] < columns[place]):
            place = i
    scale = residues[place]
    if scale != 1:
        inverse = inverse_mod(scale, modulus)
        for i in range(kept):
            residues[i] = mulmod(residues[i], inverse, modulus)
        for i in range(len(weights)):
            weights[i] = mulmod(weights[i], inverse, modulus)
    return REDUCED, columns, residues.astype(np.int32), sets, weights, place


@_kernel
def pool_write(pcols: np.ndarray, pvals: np.ndarray, psets: np.ndarray, pweights: np.ndarray, where: np.ndarray,
               pivot: int, used: int, yused: int, columns: np.ndarray, values: np.ndarray, sets: np.ndarray,
               weights: np.ndarray) -> None:
    """Write the row of L at `pivot` to the pool at `used` (its entries) and `yused` (its combination); the
    caller has made room."""
    for i in range(len(columns)):
        pcols[used + i] = columns[i]
        pvals[used + i] = values[i]
    for i in range(len(sets)):
        psets[yused + i] = sets[i]
        pweights[yused + i] = weights[i]
    where[0, pivot], where[1, pivot], where[2, pivot], where[3, pivot] = used, len(columns), yused, len(sets)


@_kernel
def quick_place(large: np.ndarray, colcount: np.ndarray, order_of: np.ndarray) -> tuple[int, bool, bool]:
    """For a new row over `large` atoms (sorted, non-empty): the position of its column fewest rows of L touch
    (the first such: the lowest atom), whether that column is fresh (no row touches it), and whether the row
    meets a pivot of L."""
    place = 0
    for i in range(1, len(large)):
        if colcount[large[i]] < colcount[large[place]]:
            place = i
    meets = False
    for i in range(len(large)):
        if order_of[large[i]] != NO_PIVOT:
            meets = True
            break
    return place, colcount[large[place]] == 0, meets


@_kernel
def count_columns(colcount: np.ndarray, columns: np.ndarray, sign: int) -> None:
    """colcount[columns] += sign (distinct columns)."""
    for i in range(len(columns)):
        colcount[columns[i]] += sign


@_kernel
def union_atoms(atom_of: np.ndarray, size: int, flat: np.ndarray, lengths: np.ndarray, count: np.ndarray,
                weights: np.ndarray, k: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray, np.ndarray]:
    """`audit_batch._union_atoms` in two passes over the run's members (`flat`, the sets' sorted members
    concatenated, `lengths` entities each; `pos` a scratch array over the atoms): for each set, whether it is a
    union of atoms that no later set of the run shares (`union`), and then its distinct atoms, sorted, at
    `atoms[bounds[i]:bounds[i + 1]]`, and those of weight ≥ k at `large[large_bounds[i]:large_bounds[i + 1]]`
    (empty slices for the other sets)."""
    n = len(lengths)
    total = len(flat)
    owners = np.empty(total, dtype=np.int64)
    for i in range(total):  # (the reads alone first: independent, so many are in flight at once)
        entity = flat[i]
        owners[i] = atom_of[entity] if entity < size else 0  # (entities no released set has seen: atom 0)
    for i in range(total):
        pos[owners[i]] = i  # an atom's last occurrence in the run
    union = np.zeros(n, dtype=np.bool_)
    atoms = np.empty(total, dtype=np.int64)
    bounds = np.zeros(n + 1, dtype=np.int64)
    large = np.empty(total, dtype=np.int64)
    large_bounds = np.zeros(n + 1, dtype=np.int64)
    start = 0
    kept = 0
    heavy = 0
    for s in range(n):
        stop = start + lengths[s]
        # shared: an atom of this set occurs again in a later set; otherwise the set holds the last occurrence
        # of each of its atoms, which are then its distinct atoms
        whole = True
        weight = 0
        first = kept
        for i in range(start, stop):
            last = pos[owners[i]]
            if last >= stop:
                whole = False
                break
            if last == i:
                atom = owners[i]
                if atom == 0:
                    whole = False
                    break
                atoms[kept] = atom
                kept += 1
                weight += count[atom]
        if whole and weight == lengths[s]:
            union[s] = True
            atoms[first:kept].sort()
            for j in range(first, kept):
                if weights[atoms[j]] >= k:
                    large[heavy] = atoms[j]
                    heavy += 1
        else:
            kept = first
        bounds[s + 1] = kept
        large_bounds[s + 1] = heavy
        start = stop
    return union, atoms, bounds, large, large_bounds


_warmed = threading.Event()


def warm() -> None:
    """Compile (or load from numba's cache) every kernel for the types the ledger calls them with."""
    acc = np.zeros(8, dtype=np.int64)
    order_of = np.full(8, NO_PIVOT, dtype=np.int64)
    order_of[1] = 1
    colcount = np.ones(8, dtype=np.int64)
    where = np.zeros((4, 8), dtype=np.int64)
    where[1, 1] = where[3, 1] = 1
    one64, one32 = np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int32)
    reduce_row(np.array([1, 2], dtype=np.int64), np.array([1, 1], dtype=np.int64), np.zeros(1, dtype=np.int64),
               one64, colcount, order_of, where, np.array([1], dtype=np.int64), one32, one32, one32, acc,
               np.zeros(8, dtype=np.int64), np.zeros(8, dtype=np.int64), np.zeros((6, 8), dtype=np.int64),
               np.zeros(8, dtype=np.int64), np.zeros(8, dtype=np.int64), 5)
    pool_write(np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32),
               np.zeros(2, dtype=np.int32), where, 2, 1, 1, one64, one32, one32, one32)
    quick_place(np.array([1, 2], dtype=np.int64), colcount, order_of)
    count_columns(colcount, np.array([1], dtype=np.int64), 1)
    union_atoms(np.zeros(8, dtype=np.int64), 8, np.array([1, 2], dtype=np.int64), np.array([2], dtype=np.int64),
                colcount, colcount, 5, np.zeros(8, dtype=np.int64))
    _warmed.set()


def warm_in_background() -> threading.Thread:
    """`warm` in a daemon thread (the kernels release the GIL only while they run; compiling holds numba's lock,
    so a first audit meanwhile waits for the compilation instead of compiling again)."""
    thread = threading.Thread(target=warm, name="audit-kernel-warm", daemon=True)
    thread.start()
    return thread
