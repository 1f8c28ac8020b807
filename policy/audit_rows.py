"""Rows of the release audit's ledgers (policy/audit_ledger.py) and the work budget their operations spend.

A row is a sparse vector over atoms: exact (`Row`, int or `Fraction` values) or modulo a ledger's secret prime
(int64 key and value arrays). This module holds the arithmetic on them (axpy, rank, kernel, modular combination,
rational reconstruction), the primes, and `Budget`, which every row operation charges. It knows nothing of sets,
atoms or checks.
"""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

Value = int | Fraction
Row = dict[int, Value]


class BudgetExceeded(Exception):
    """The audit spent its work budget for this run."""


@dataclass
class Budget:
    """Elementary steps (row operations, entries touched, set tests) an audit may still spend.

    Spending never interrupts a change of state; `check()` raises BudgetExceeded at the points where stopping
    leaves the ledger consistent (and the caller rolls the set back).
    """

    remaining: int

    def spend(self, units: int = 1) -> None:
        """Count `units` steps."""
        self.remaining -= units

    def check(self) -> None:
        """Raise BudgetExceeded when the budget is spent."""
        if self.remaining < 0:
            raise BudgetExceeded

    def spend_each(self, units: int) -> None:
        """`spend(1); check()` `units` times (stops, and raises, where such a loop would)."""
        if units > 0 and self.remaining < units:
            self.remaining -= max(1, self.remaining + 1)
            raise BudgetExceeded
        self.remaining -= units


def as_row(keys: np.ndarray, values: np.ndarray) -> Row:
    """A sparse row from its key and value arrays."""
    return dict(zip(keys.tolist(), values.tolist(), strict=True))


def random_prime(bits: int) -> int:
    """A uniformly drawn secret prime of exactly `bits` bits (Miller-Rabin, deterministic below 2^64)."""
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        if is_prime(candidate):
            return candidate


def is_prime(n: int) -> bool:
    """Primality, exact for n < 3.3e24 (Miller-Rabin with the first 13 primes as bases)."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n < 2:
        return False
    for q in bases:
        if n % q == 0:
            return n == q
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def lift(value: int, modulus: int) -> Value | None:
    """The rational a/b with |a|, |b| <= sqrt(modulus / 2) congruent to `value`, if any (rational reconstruction
    by the extended Euclidean algorithm; unique when it exists)."""
    bound = math.isqrt(modulus // 2)
    value %= modulus
    if value <= bound:
        return value  # a/1 with a = value (the unique reconstruction: its first remainder is already below bound)
    if modulus - value <= bound:
        return value - modulus
    r0, r1, s0, s1 = modulus, value, 0, 1
    while r1 > bound:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    if s1 == 0 or abs(s1) > bound or math.gcd(r1, s1) != 1:
        return None
    return div(r1, s1)


def axpy_mod(target: Row, factor: int, source: Row, modulus: int, budget: Budget) -> None:
    """target += factor * source modulo `modulus`, dropping zeros."""
    budget.spend(len(source))
    get = target.get
    for key, value in source.items():
        updated = (get(key, 0) + factor * value) % modulus
        if updated:
            target[key] = updated
        else:
            target.pop(key, None)


def distinct(keys: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The distinct values of `keys` (indexes into `scratch`, which it overwrites), in order of last occurrence,
    without sorting."""
    order = np.arange(len(keys))
    scratch[keys] = order
    return keys[scratch[keys] == order]


def pack_arrays(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows given as (keys, values) arrays, as (lengths, keys, values) arrays (the snapshot layout)."""
    lengths = np.array([len(k) for k, _ in rows], dtype=np.int64)
    keys = np.concatenate([k for k, _ in rows]) if rows else np.zeros(0, dtype=np.int64)
    values = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, dtype=np.int64)
    if not len(keys) or keys.max() < 1 << 31:
        keys = keys.astype(np.int32)
    fits = not len(values) or (values.min() >= -(1 << 31) and values.max() < 1 << 31)
    return lengths, keys, values.astype(np.int32 if fits else np.int64)


def slices(lengths: np.ndarray, keys: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """`pack_arrays` output as (keys, values) arrays per row (int32 where they fit, as stored; views of the
    arrays given)."""
    bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
    return [(keys[a:b], values[a:b]) for a, b in itertools.pairwise(bounds)]


def div(a: Value, b: Value) -> Value:
    """a / b exactly, as an int when it is one."""
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


def axpy(target: Row, factor: Value, source: Row, budget: Budget, columns: dict[int, set[int]] | None = None,
          pivot: int = 0) -> None:
    """target += factor * source, dropping zeros (ints stay ints; Fractions with denominator 1 become ints).

    With `columns`, the column index of the row `pivot` (target) is kept up to date for entries that appear or vanish.
    """
    budget.spend(len(source))
    for key, value in source.items():
        before = target.get(key, 0)
        updated = before + factor * value
        if updated:
            if type(updated) is Fraction and updated.denominator == 1:
                updated = updated.numerator
            target[key] = updated
            if columns is not None and not before:
                columns.setdefault(key, set()).add(pivot)
        elif before:
            del target[key]
            if columns is not None:
                columns[key].discard(pivot)


def index_columns(columns: dict[int, set[int]], pivot: int, row: Row) -> None:
    """Note `pivot` as a holder of each of `row`'s columns."""
    for atom in row:
        columns.setdefault(atom, set()).add(pivot)


def unindex_columns(columns: dict[int, set[int]], pivot: int, row: Row) -> None:
    """Forget `pivot` as a holder of `row`'s columns."""
    for atom in row:
        holders = columns.get(atom)
        if holders is not None:
            holders.discard(pivot)


def kernel_vector(matrix: list[list[Value]]) -> list[Value] | None:
    """For a d x (d-1) matrix A of rank d-1, the non-zero c (unique up to scale) with c A = 0; else None."""
    d = len(matrix)
    # the columns of A become the rows of a (d-1) x d system; reduce it exactly
    system = [[Fraction(matrix[i][j]) for i in range(d)] for j in range(d - 1)]
    pivot_of: list[int] = []
    for r, equation in enumerate(system):
        column = next((c for c in range(d) if equation[c] != 0 and c not in pivot_of), None)
        if column is None:
            return None  # rank below d-1: more than one direction vanishes on these atoms
        scale = equation[column]
        system[r] = equation = [v / scale for v in equation]
        for other in range(d - 1):
            if other != r and system[other][column] != 0:
                factor = system[other][column]
                system[other] = [a - factor * b for a, b in zip(system[other], equation, strict=True)]
        pivot_of.append(column)
    free = next(c for c in range(d) if c not in pivot_of)
    solution: list[Fraction] = [Fraction(0)] * d
    solution[free] = Fraction(1)
    for r, column in enumerate(pivot_of):
        solution[column] = -system[r][free]
    return [v.numerator if v.denominator == 1 else v for v in solution]


def rank(rows: list[Row], budget: Budget) -> int:
    """Rank of sparse rational rows (Gaussian elimination on copies)."""
    basis: dict[int, Row] = {}
    for original in rows:
        row = dict(original)
        for pivot, reducer in basis.items():
            factor = row.get(pivot)
            if factor:
                axpy(row, -factor, reducer, budget)
        if row:
            pivot = next(iter(row))
            scale = row[pivot]
            basis[pivot] = {a: div(v, scale) for a, v in row.items()}
    return len(basis)
